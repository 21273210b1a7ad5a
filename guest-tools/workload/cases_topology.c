/* The topology suite (migrate_suite --topology): cases that need a machine other than the
 * default two nodes. Each row of its table states what it needs (TOPO_* bits); the runner
 * reports an unmet need as "# SKIP needs: ..." (topology_unmet). Cases: three_node_migrate_pages,
 * memoryless_target, memoryless_local_alloc, cpuless_place_move, memory_offline, longterm_pin,
 * demotion. */
#include "suite.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sched.h>
#include <sys/mman.h>

#define NODE_DIR "/sys/devices/system/node/"

static int in(const int *list, int nr, int node)
{
	for (int i = 0; i < nr; i++)
		if (list[i] == node)
			return 1;
	return 0;
}

/* The machine's nodes by kind: with memory, online without memory (with CPUs), with memory but
 * no CPUs. Each list in ascending order; returns 0, or -1 when sysfs cannot be read. */
struct topo {
	int mem[MASK_BITS], nr_mem;
	int memoryless[MASK_BITS], nr_memoryless;
	int cpuless[MASK_BITS], nr_cpuless;
};

static int topo_read(struct topo *t)
{
	int online[MASK_BITS], cpu[MASK_BITS];
	int nr_online = read_list(NODE_DIR "online", online, MASK_BITS);
	int nr_cpu = read_list(NODE_DIR "has_cpu", cpu, MASK_BITS);
	t->nr_mem = read_list(NODE_DIR "has_memory", t->mem, MASK_BITS);
	if (nr_online < 0 || nr_cpu < 0 || t->nr_mem < 0)
		return -1;
	t->nr_memoryless = t->nr_cpuless = 0;
	for (int i = 0; i < nr_online; i++) {
		int n = online[i];
		if (!in(t->mem, t->nr_mem, n) && in(cpu, nr_cpu, n))
			t->memoryless[t->nr_memoryless++] = n;
		if (in(t->mem, t->nr_mem, n) && !in(cpu, nr_cpu, n))
			t->cpuless[t->nr_cpuless++] = n;
	}
	return 0;
}

#define MEM_DIR "/sys/devices/system/memory/"

/* A memory block's sysfs attribute (state, valid_zones) into buf; 0 ok. */
static int block_attr(long block, const char *attr, char *buf, size_t n)
{
	char path[128];
	snprintf(path, sizeof(path), MEM_DIR "memory%ld/%s", block, attr);
	return sysfs_read(path, buf, n);
}

/* Online and in ZONE_MOVABLE only: a block the kernel can offline by migrating its pages. */
static int block_movable(long block)
{
	char state[32], zones[64];
	return !block_attr(block, "state", state, sizeof(state)) && !strcmp(state, "online") &&
	       !block_attr(block, "valid_zones", zones, sizeof(zones)) && !strcmp(zones, "Movable");
}

static long pages_per_block(void)
{
	char buf[32];
	return sysfs_read(MEM_DIR "block_size_bytes", buf, sizeof(buf)) ? -1 : (long)(strtoull(buf, NULL, 16) / PAGE);
}

/* The first node with an online Movable block, -1 if none. */
static int node_with_movable_block(void)
{
	DIR *d = opendir(MEM_DIR);
	int node = -1;
	for (struct dirent *e; d && node < 0 && (e = readdir(d));) {
		long b;
		if (sscanf(e->d_name, "memory%ld", &b) != 1 || !block_movable(b))
			continue;
		char path[160];
		for (int n = 0; n < MASK_BITS && node < 0; n++) {
			snprintf(path, sizeof(path), MEM_DIR "memory%ld/node%d", b, n);
			if (!access(path, F_OK))
				node = n;
		}
	}
	if (d)
		closedir(d);
	return node;
}

#define TIER_DIR "/sys/devices/virtual/memory_tiering/"

/* The memory tier holding node (N of memory_tierN: a lower tier has a larger N), -1 if none. */
static int tier_of(int node)
{
	DIR *d = opendir(TIER_DIR);
	int tier = -1;
	for (struct dirent *e; d && tier < 0 && (e = readdir(d));) {
		int t, nodes[MASK_BITS], nr;
		char path[128];
		if (sscanf(e->d_name, "memory_tier%d", &t) != 1)
			continue;
		snprintf(path, sizeof(path), TIER_DIR "memory_tier%d/nodelist", t);
		nr = read_list(path, nodes, MASK_BITS);
		if (nr > 0 && in(nodes, nr, node))
			tier = t;
	}
	if (d)
		closedir(d);
	return tier;
}

/* A top-tier node with CPUs and memory, and a node with memory in a lower tier; 0 if found. */
static int tier_pair(const struct topo *t, int *top, int *far)
{
	*top = *far = -1;
	for (int i = 0; i < t->nr_mem; i++)
		if (node_has_cpus(t->mem[i]) && (*top < 0 || tier_of(t->mem[i]) < tier_of(*top)))
			*top = t->mem[i];
	for (int i = 0; i < t->nr_mem && *top >= 0; i++)
		if (tier_of(t->mem[i]) > tier_of(*top) && tier_of(*top) >= 0)
			*far = t->mem[i];
	return *top < 0 || *far < 0 ? -1 : 0;
}

int topology_unmet(unsigned needs, char *why, size_t n)
{
	struct topo t;
	if (topo_read(&t))
		return snprintf(why, n, "needs: the node lists in " NODE_DIR " (unreadable)"), 1;
	if ((needs & TOPO_3_MEM_NODES) && t.nr_mem < 3)
		return snprintf(why, n, "needs: 3 NUMA nodes with memory (found %d)", t.nr_mem), 1;
	if ((needs & TOPO_MEMORYLESS) && !t.nr_memoryless)
		return snprintf(why, n, "needs: a memoryless node with CPUs (found none)"), 1;
	if ((needs & TOPO_CPULESS) && !t.nr_cpuless)
		return snprintf(why, n, "needs: a CPU-less node with memory (found none)"), 1;
	int top, far;
	if ((needs & TOPO_LOWER_TIER) && tier_pair(&t, &top, &far))
		return snprintf(why, n, "needs: a node with memory in a lower memory tier (found none in " TIER_DIR
				")"), 1;
	if ((needs & TOPO_REMOVABLE) && node_with_movable_block() < 0)
		return snprintf(why, n, "needs: a removable memory block (online, Movable; found none)"), 1;
	return 0;
}

/* node's distance to `to` from NODE_DIR/nodeN/distance, -1 if unknown. */
static int distance(int node, int to)
{
	char path[96], buf[512];
	snprintf(path, sizeof(path), NODE_DIR "node%d/distance", node);
	if (sysfs_read(path, buf, sizeof(buf)))
		return -1;
	char *p = buf;
	for (int i = 0;; i++) {
		char *end;
		long d = strtol(p, &end, 10);
		if (end == p)
			return -1;
		if (i == to)
			return (int)d;
		p = end;
	}
}

/* ---------------------------------------------------------- three_node_migrate_pages */

/* A node set as a mask and as text ("{0,1}"). */
static void node_set(const int *nodes, int nr, unsigned long mask[2], char *text, size_t n)
{
	mask[0] = mask[1] = 0;
	int len = snprintf(text, n, "{");
	for (int i = 0; i < nr; i++) {
		mask[nodes[i] / 64] |= 1UL << (nodes[i] % 64);
		len += snprintf(text + len, n - len, "%s%d", i ? "," : "", nodes[i]);
	}
	snprintf(text + len, n - len, "}");
}

/* migrate_pages(child, from -> to) with the child's pages in three parts on n[0], n[1], n[2];
 * expect part i on want[i], the data intact, and moves[i] migrations per page of part i
 * (the trace events count each migration: a page moved twice counts twice). */
static void migrate_three(struct helper *child, char *r, size_t part, const int n[3], const int *from, int nfrom,
                          const int *to, int nto, const int want[3], const int moves[3])
{
	pid_t pid = child->pid;
	int st[3 * 64], exp[3 * 64];
	for (size_t i = 0; i < 3 * part; i++)
		exp[i] = n[i / part];
	long ret = move_region(pid, r, 3 * part, exp, 0, st, MPOL_MF_MOVE);
	if (ret != 0 || expect_statuses("precondition: the child's three parts", pid, r, 3 * part, exp)) {
		failf("could not place the child's pages on nodes %d, %d, %d (move_pages returned %ld, %s)", n[0], n[1],
		      n[2], ret, errname(errno));
		return;
	}
	unsigned long old[2], new_[2];
	char f[48], t[48], what[128];
	node_set(from, nfrom, old, f, sizeof(f));
	node_set(to, nto, new_, t, sizeof(t));
	snprintf(what, sizeof(what), "migrate_pages %s -> %s", f, t);
	/* The child's other pages (stack, data) on the moving nodes move too: the upper bound. */
	long others = 0, expected = 0;
	for (int i = 0; i < 3; i++) {
		others += (long)moves[i] * (numa_maps_pages_on(pid, n[i], 0) - (long)part);
		expected += (long)moves[i] * (long)part;
	}
	struct trace_mark t0 = trace_mark(REASON_SYSCALL);
	ret = sys_migrate_pages(pid, MAXNODE, old, new_);
	CHECK(ret == 0, "%s returned %ld (%s), expected 0 (every page moved)", what, ret, errname(errno));
	for (size_t i = 0; i < 3 * part; i++)
		exp[i] = want[i / part];
	diag("%s: expect the parts on nodes %d,%d,%d to end on %d,%d,%d after %d,%d,%d migration(s) per page", what,
	     n[0], n[1], n[2], want[0], want[1], want[2], moves[0], moves[1], moves[2]);
	expect_statuses(what, pid, r, 3 * part, exp);
	expect_trace(what, REASON_SYSCALL, t0, expected, expected + (others > 0 ? others : 0), 0);
	int v = helper_ask(child, HELPER_VERIFY);
	CHECK(v == '0', "after %s the child replied %d to 'verify your data', expected '0' (data intact)", what, v);
}

/* migrate_pages(2) maps the i-th node of old_nodes to the i-th of new_nodes (node_remap());
 * do_migrate_pages() first moves a node whose destination is no source left, so no page
 * moves twice; with sets of different sizes the nodes of new_nodes stay. */
int case_three_node_migrate_pages(void)
{
	enum { PART = 32 };
	struct topo t;
	topo_read(&t);
	const int a = t.mem[0], b = t.mem[1], c = t.mem[2], n[3] = { a, b, c };
	char *r = map_region(3 * PART, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct helper child;
	if (!r || helper_start(&child, r, 3 * PART, a, 51))
		return FAIL;
	/* {a,b} -> {b,c}: a->b, b->c (b->c first); c's pages stay. */
	migrate_three(&child, r, PART, n, (int[]){ a, b }, 2, (int[]){ b, c }, 2, (int[]){ b, c, c },
		      (int[]){ 1, 1, 0 });
	/* {b,c} -> {a,b}: b->a, c->b (b->a first); a's pages stay. */
	migrate_three(&child, r, PART, n, (int[]){ b, c }, 2, (int[]){ a, b }, 2, (int[]){ a, a, b },
		      (int[]){ 0, 1, 1 });
	/* {a,b,c} -> {b,c}: sizes differ, so b and c (in new_nodes) stay; a -> b. */
	migrate_three(&child, r, PART, n, (int[]){ a, b, c }, 3, (int[]){ b, c }, 2, (int[]){ b, b, c },
		      (int[]){ 1, 0, 0 });
	/* "{a,b,c} -> {b,c,a}" is no rotation: node masks are sets, the same set; nothing moves. */
	migrate_three(&child, r, PART, n, (int[]){ a, b, c }, 3, (int[]){ b, c, a }, 3, (int[]){ a, b, c },
		      (int[]){ 0, 0, 0 });
	helper_quit(&child, "three-node migrate_pages child");
	return PASS;
}

/* ---------------------------------------------------------- memoryless_target */

int case_memoryless_target(void)
{
	enum { N = 16 };
	struct topo t;
	topo_read(&t);
	const int M = t.memoryless[0], A = g_node_a;
	int st[N], exp[N];
	char *r = anon_pages_on(A, N, 61);
	if (!r || expect_on_node("precondition", 0, r, N, A))
		return FAIL;
	diag("memoryless node %d; the pages are on node %d", M, A);
	struct trace_mark t0 = trace_mark(REASON_SYSCALL);
	/* move_pages(2): a target node without memory is -ENODEV for the whole call. */
	for (int i = 0; i < N; i++)
		st[i] = STATUS_UNSET, exp[i] = A;
	long ret = move_region(0, r, N, NULL, M, st, MPOL_MF_MOVE);
	CHECK(ret == -1 && errno == ENODEV, "move_pages(-> memoryless node %d) returned %ld (%s), expected ENODEV", M,
	      ret, errname(ret ? errno : 0));
	/* migrate_pages(2): new_nodes holding no node with memory is EINVAL. */
	unsigned long old[2], new_[2];
	nodemask_of(old, A);
	nodemask_of(new_, M);
	ret = sys_migrate_pages(0, MAXNODE, old, new_);
	CHECK(ret == -1 && errno == EINVAL, "migrate_pages({%d} -> memoryless {%d}) returned %ld (%s), expected EINVAL",
	      A, M, ret, errname(ret ? errno : 0));
	/* mbind(2): a BIND policy on memoryless nodes only is EINVAL, nothing installed. */
	ret = sys_mbind(r, N * PAGE, MPOL_BIND, new_, MAXNODE, MPOL_MF_MOVE);
	CHECK(ret == -1 && errno == EINVAL, "mbind(BIND{memoryless %d}, MOVE) returned %ld (%s), expected EINVAL", M,
	      ret, errname(ret ? errno : 0));
	expect_statuses("after the refused calls", 0, r, N, exp);
	check_pattern("after the refused calls", r, 0, N, 61);
	expect_trace("calls to a memoryless node", REASON_SYSCALL, t0, 0, 0, 0);
	unmap_region(r, N);
	return PASS;
}

/* ---------------------------------------------------------- memoryless_local_alloc */

int case_memoryless_local_alloc(void)
{
	enum { N = 64 };
	struct topo t;
	topo_read(&t);
	const int M = t.memoryless[0];
	/* The nodes with memory nearest to M: a local allocation there lands on one of them. */
	int best = 1 << 30, nearest[MASK_BITS], nr = 0;
	for (int i = 0; i < t.nr_mem; i++) {
		int d = distance(M, t.mem[i]);
		if (d >= 0 && d < best)
			best = d, nr = 0;
		if (d == best)
			nearest[nr++] = t.mem[i];
	}
	if (!nr)
		return failf("no distance from node %d to a node with memory in " NODE_DIR "node%d/distance", M, M), FAIL;
	if (run_on_node_cpus(M))
		return failf("cannot run on the CPUs of memoryless node %d: %s", M, errname(errno)), FAIL;
	char *r = map_region(N, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!r)
		return FAIL;
	fill_pattern(r, 0, N, 71); /* first touch on a CPU of M, default policy */
	int where[N];
	long ret = query_pages(0, r, N, where);
	CHECK(ret == 0, "move_pages query returned %ld (%s)", ret, errname(errno));
	diag("task on the CPUs of memoryless node %d: pages on node %d (nearest with memory at distance %d: %d "
	     "node(s), the first %d)", M, where[0], best, nr, nearest[0]);
	for (int i = 0; i < N; i++)
		if (!in(nearest, nr, where[i])) {
			failf("page %d of a local allocation on memoryless node %d's CPUs is on %s, expected a nearest node "
			      "with memory (distance %d, e.g. node %d)", i, M, statusname(where[i]), best, nearest[0]);
			break;
		}
	/* The pages move off and back like any others, from this CPU. */
	int home = where[0], other = t.mem[0] == home ? t.mem[1] : t.mem[0];
	move_all_expect("from a memoryless node's CPU, to another node", r, N, other);
	move_all_expect("from a memoryless node's CPU, back", r, N, home);
	check_pattern("after the moves", r, 0, N, 71);
	unmap_region(r, N);
	return PASS;
}

/* ---------------------------------------------------------- cpuless_place_move */

int case_cpuless_place_move(void)
{
	enum { N = 64 };
	struct topo t;
	topo_read(&t);
	const int C = t.cpuless[0], A = t.mem[0] == C ? t.mem[1] : t.mem[0];
	run_on_node_cpus(A);
	char *r = anon_pages_on(C, N, 81); /* MPOL_BIND{C} from a CPU of another node */
	if (!r)
		return FAIL;
	diag("CPU-less node %d, the task on node %d's CPUs", C, A);
	if (expect_on_node("MPOL_BIND to the CPU-less node", 0, r, N, C) ||
	    expect_numa_maps("MPOL_BIND to the CPU-less node", 0, r, C, N))
		return FAIL;
	struct trace_mark t0 = trace_mark(REASON_SYSCALL);
	move_all_expect("CPU-less node -> a node with CPUs", r, N, A);
	move_all_expect("back to the CPU-less node", r, N, C);
	check_pattern("after the moves", r, 0, N, 81);
	expect_trace("move_pages(2) off the CPU-less node and back", REASON_SYSCALL, t0, 2 * N, 2 * N, 0);
	/* migrate_pages(2) of the whole process off the CPU-less node. */
	unsigned long old[2], new_[2];
	nodemask_of(old, C);
	nodemask_of(new_, A);
	long ret = sys_migrate_pages(0, MAXNODE, old, new_);
	CHECK(ret == 0, "migrate_pages({%d} -> {%d}) returned %ld (%s), expected 0", C, A, ret, errname(errno));
	expect_on_node("after migrate_pages off the CPU-less node", 0, r, N, A);
	check_pattern("after migrate_pages", r, 0, N, 81);
	unmap_region(r, N);
	return PASS;
}

/* ---------------------------------------------------------- memory_offline */

/* The block holding most of pfn[0..n) among those `ok` accepts (each block asked once, the
 * busiest first); how many of the pages it holds in *count; -1 if none. */
static long busiest_block(const uint64_t *pfn, size_t n, long ppb, int (*ok)(long), long *count)
{
	long block[n], hits[n];
	size_t nb = 0;
	for (size_t i = 0; i < n; i++) {
		size_t j = 0;
		while (j < nb && block[j] != (long)(pfn[i] / ppb))
			j++;
		if (j == nb)
			block[nb] = (long)(pfn[i] / ppb), hits[nb++] = 0;
		hits[j]++;
	}
	for (;;) {
		size_t top = 0;
		for (size_t j = 1; j < nb; j++)
			top = hits[j] > hits[top] ? j : top;
		if (!nb || !hits[top])
			return *count = 0, -1;
		if (ok(block[top]))
			return *count = hits[top], block[top];
		hits[top] = 0;
	}
}

/* Online, in one kernel zone (Normal or DMA32), with a slab page in it: a block that cannot
 * go offline (its slab page cannot move). */
static int block_unmovable(long block)
{
	char state[32], zones[64];
	if (block_attr(block, "state", state, sizeof(state)) || strcmp(state, "online") ||
	    block_attr(block, "valid_zones", zones, sizeof(zones)) || (strcmp(zones, "Normal") && strcmp(zones, "DMA32")))
		return 0;
	long ppb = pages_per_block(), slab = 0;
	uint64_t *flags = calloc(ppb, sizeof(uint64_t));
	int fd = open("/proc/kpageflags", O_RDONLY);
	if (fd >= 0 && flags && pread(fd, flags, ppb * sizeof(uint64_t), block * ppb * sizeof(uint64_t)) > 0)
		for (long i = 0; i < ppb; i++)
			slab += flags[i] >> KPF_SLAB_BIT & 1;
	if (fd >= 0)
		close(fd);
	free(flags);
	return slab > 0;
}

static long g_tried[8]; /* blocks the kernel refused with EINVAL (memory holes in them) */
static int g_ntried;

static int untried(long block)
{
	for (int i = 0; i < g_ntried; i++)
		if (g_tried[i] == block)
			return 0;
	return 1;
}

static int block_movable_untried(long block)
{
	return untried(block) && block_movable(block);
}

static int block_unmovable_untried(long block)
{
	return untried(block) && block_unmovable(block);
}

static long offline_block(long block)
{
	char path[128];
	snprintf(path, sizeof(path), MEM_DIR "memory%ld/state", block);
	return sysfs_write(path, "offline") ? -errno : 0;
}

int case_memory_offline(void)
{
	enum { N = 512 };
	const int X = node_with_movable_block();
	const long ppb = pages_per_block();
	uint64_t pfn[N], after[N];
	/* Offline: every page in it migrates (MR_MEMORY_HOTPLUG), data and mapping intact. A
	 * block with holes (the end of boot RAM) is refused with EINVAL before anything moves:
	 * then our next batch of pages (the refused block fills up, the next one lands beyond). */
	char *r = NULL;
	long in_b = 0, B = -1, ret = -EINVAL;
	struct trace_mark t0 = trace_mark(REASON_MEMORY_HOTPLUG);
	for (int batch = 0; ret == -EINVAL && batch < 2 * ppb / N; batch++) {
		r = anon_pages_on(X, N, 91);
		if (!r || ppb <= 0 || pfns_of(r, N, pfn))
			return failf("could not place %d pages on node %d and read their PFNs", N, X), FAIL;
		while (ret == -EINVAL && g_ntried < 8 && (B = busiest_block(pfn, N, ppb, block_movable_untried, &in_b)) >= 0) {
			diag("memory block %ld (node %d, %ld pages) holds %ld of our %d pages (batch %d)", B, X, ppb, in_b, N,
			     batch);
			t0 = trace_mark(REASON_MEMORY_HOTPLUG);
			if ((ret = offline_block(B)) == -EINVAL)
				diag("block %ld: EINVAL (memory holes in it), trying the next", B), g_tried[g_ntried++] = B;
		}
	}
	if (B < 0)
		return failf("none of our pages bound to node %d is in an online Movable block without holes, expected "
			     "ZONE_MOVABLE first", X), FAIL;
	char state[32] = "";
	block_attr(B, "state", state, sizeof(state));
	CHECK(ret == 0 && !strcmp(state, "offline"), "offlining block %ld: write returned %s, state '%s', expected "
	      "success and 'offline'", B, errname((int)-ret), state);
	if (pfns_of(r, N, after))
		failf("cannot read the PFNs after the offline");
	long left = 0;
	for (int i = 0; i < N; i++)
		left += (long)(after[i] / ppb) == B;
	CHECK(left == 0, "after block %ld went offline %ld of our pages still have a PFN in it, expected 0", B, left);
	/* do_migrate_range() allocates the new pages on another node with memory when there is
	 * one (the block's own node only when it is the last), the nearest first. */
	struct topo t;
	topo_read(&t);
	int where[N];
	if (query_pages(0, r, N, where))
		failf("move_pages query after the offline: %s", errname(errno));
	for (int i = 0; i < N; i++)
		if ((long)(pfn[i] / ppb) == B && (!in(t.mem, t.nr_mem, where[i]) || (t.nr_mem > 1 && where[i] == X))) {
			failf("after the offline page %d (it was in block %ld) is on %s, expected a node with memory other "
			      "than %d", i, B, statusname(where[i]), X);
			break;
		}
	check_pattern("after the offline", r, 0, N, 91);
	fill_pattern(r, 0, N, 92);
	check_pattern("rewritten after the offline", r, 0, N, 92);
	expect_trace("offlining a Movable block", REASON_MEMORY_HOTPLUG, t0, in_b, ppb, TRACE_ANY_FAILED);

	/* Online again, movable as before. */
	char path[128], zones[64] = "";
	snprintf(path, sizeof(path), MEM_DIR "memory%ld/state", B);
	ret = sysfs_write(path, "online_movable");
	block_attr(B, "state", state, sizeof(state));
	block_attr(B, "valid_zones", zones, sizeof(zones));
	CHECK(ret == 0 && !strcmp(state, "online") && !strcmp(zones, "Movable"), "onlining block %ld again: write "
	      "returned %ld (%s), state '%s', zones '%s', expected online Movable", B, ret, errname(errno), state, zones);

	/* A block with an unmovable (slab) page in it: EBUSY, nothing moved, nothing lost. */
	const int A = g_node_a;
	char *u = anon_pages_on(A, N, 93);
	if (!u || pfns_of(u, N, pfn))
		return FAIL;
	long in_u, U;
	struct trace_mark t1;
	do {
		U = busiest_block(pfn, N, ppb, block_unmovable_untried, &in_u);
		/* Our pages went Movable: any such block, the highest first. */
		for (long b = 4095; U < 0 && b > 0; b--)
			if (block_unmovable_untried(b))
				U = b, in_u = 0;
		if (U < 0)
			return failf("no online Normal or DMA32 memory block without holes with a slab page"), FAIL;
		diag("memory block %ld (one kernel zone, a slab page in it) holds %ld of our pages on node %d", U, in_u,
		     A);
		t1 = trace_mark(REASON_MEMORY_HOTPLUG);
		ret = offline_block(U);
		if (ret == -EINVAL)
			diag("block %ld: EINVAL (memory holes in it), trying the next", U);
	} while (ret == -EINVAL && g_ntried < 8 && (g_tried[g_ntried++] = U, 1));
	block_attr(U, "state", state, sizeof(state));
	CHECK(ret == -EBUSY && !strcmp(state, "online"), "offlining block %ld with a slab page: write returned %s, "
	      "state '%s', expected EBUSY and 'online'", U, errname((int)-ret), state);
	if (!pfns_of(u, N, after))
		CHECK(!memcmp(pfn, after, sizeof(pfn)), "the refused offline of block %ld moved some of our pages", U);
	check_pattern("after the refused offline", u, 0, N, 93);
	expect_trace("a refused offline", REASON_MEMORY_HOTPLUG, t1, 0, 0, 0);
	return PASS;
}

/* ---------------------------------------------------------- longterm_pin */

/* One io_uring (raw syscalls, no liburing): its rings mapped, one SQE at a time. */
struct ring {
	int fd;
	unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
};

static int ring_open(struct ring *q)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	q->fd = (int)syscall(__NR_io_uring_setup, 4, &p);
	if (q->fd < 0)
		return -1;
	size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	size_t len = sq_len > cq_len ? sq_len : cq_len; /* IORING_FEAT_SINGLE_MMAP: one mapping for both */
	char *sq = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, q->fd, IORING_OFF_SQ_RING);
	q->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_POPULATE, q->fd, IORING_OFF_SQES);
	if (sq == MAP_FAILED || q->sqes == MAP_FAILED)
		return -1;
	q->sq_tail = (unsigned *)(sq + p.sq_off.tail);
	q->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	q->sq_array = (unsigned *)(sq + p.sq_off.array);
	q->cq_head = (unsigned *)(sq + p.cq_off.head);
	q->cq_tail = (unsigned *)(sq + p.cq_off.tail);
	q->cq_mask = (unsigned *)(sq + p.cq_off.ring_mask);
	q->cqes = (struct io_uring_cqe *)(sq + p.cq_off.cqes);
	return 0;
}

/* IORING_OP_WRITE_FIXED of registered buffer 0 (len bytes at buf) to fd at offset 0; its result. */
static int ring_write_fixed(struct ring *q, int fd, void *buf, unsigned len)
{
	unsigned tail = *q->sq_tail, i = tail & *q->sq_mask;
	struct io_uring_sqe *sqe = &q->sqes[i];
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_WRITE_FIXED;
	sqe->fd = fd;
	sqe->addr = (unsigned long)buf;
	sqe->len = len;
	sqe->buf_index = 0;
	q->sq_array[i] = i;
	__atomic_store_n(q->sq_tail, tail + 1, __ATOMIC_RELEASE);
	if (syscall(__NR_io_uring_enter, q->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		return -errno;
	unsigned head = *q->cq_head;
	if (head == __atomic_load_n(q->cq_tail, __ATOMIC_ACQUIRE))
		return -EAGAIN;
	int res = q->cqes[head & *q->cq_mask].res;
	__atomic_store_n(q->cq_head, head + 1, __ATOMIC_RELEASE);
	return res;
}

/* Write the registered buffer to a tmpfs file through io_uring and compare the file with the
 * pattern `seed`: the pinned pages are the ones the process sees. */
static void expect_pin_writes(const char *what, struct ring *q, char *buf, size_t n, uint64_t seed)
{
	char path[] = "/tmp/longterm_pin.XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0) {
		failf("%s: mkstemp: %s", what, errname(errno));
		return;
	}
	unlink(path);
	int res = ring_write_fixed(q, fd, buf, (unsigned)(n * PAGE));
	CHECK(res == (int)(n * PAGE), "%s: IORING_OP_WRITE_FIXED returned %d (%s), expected %lu", what, res,
	      res < 0 ? errname(-res) : "short", n * PAGE);
	char *copy = mmap(NULL, n * PAGE, PROT_READ, MAP_SHARED, fd, 0);
	if (copy != MAP_FAILED) {
		check_pattern(what, copy, 0, n, seed);
		munmap(copy, n * PAGE);
	}
	close(fd);
}

int case_longterm_pin(void)
{
	enum { N = 64 };
	const int X = node_with_movable_block();
	const long ppb = pages_per_block();
	uint64_t pfn[N];
	struct ring q;
	if (ring_open(&q))
		return errno == ENOSYS ? skip("needs: io_uring (CONFIG_IO_URING; io_uring_setup: ENOSYS)")
				       : (failf("io_uring_setup or its mmap: %s", errname(errno)), FAIL);
	char *r = anon_pages_on(X, N, 101);
	if (!r || pfns_of(r, N, pfn))
		return failf("could not place %d pages on node %d and read their PFNs", N, X), FAIL;
	long movable = 0;
	for (int i = 0; i < N; i++)
		movable += block_movable((long)(pfn[i] / ppb));
	diag("%ld of %d pages bound to node %d are in ZONE_MOVABLE before the pin", movable, N, X);
	if (!movable)
		return failf("precondition: none of the pages on node %d is in ZONE_MOVABLE, expected it first", X), FAIL;

	/* IORING_REGISTER_BUFFERS pins with FOLL_LONGTERM: first out of ZONE_MOVABLE (MR_LONGTERM_PIN). */
	struct iovec iov = { .iov_base = r, .iov_len = N * PAGE };
	struct trace_mark t0 = trace_mark(REASON_LONGTERM_PIN);
	long ret = syscall(__NR_io_uring_register, q.fd, IORING_REGISTER_BUFFERS, &iov, 1);
	CHECK(ret == 0, "io_uring_register(REGISTER_BUFFERS) returned %ld (%s), expected 0", ret, errname(errno));
	if (pfns_of(r, N, pfn))
		return failf("cannot read the PFNs after the pin"), FAIL;
	long still = 0;
	for (int i = 0; i < N; i++)
		still += block_movable((long)(pfn[i] / ppb));
	CHECK(still == 0, "after the long-term pin %ld pages are still in ZONE_MOVABLE, expected 0 (moved out first)",
	      still);
	check_pattern("after the long-term pin", r, 0, N, 101);
	expect_trace("the long-term pin", REASON_LONGTERM_PIN, t0, movable, N, 0);

	/* The pin works: io_uring writes what the process wrote, before and after new data. */
	expect_pin_writes("the pinned buffer written by io_uring", &q, r, N, 101);
	fill_pattern(r, 0, N, 102);
	expect_pin_writes("the pinned buffer rewritten, written by io_uring", &q, r, N, 102);
	close(q.fd);
	return PASS;
}

/* ---------------------------------------------------------- demotion */

struct where {
	long top, far, swapped, other;
};

/* n cold pages on node top, then more memory asked of top than it has free (MPOL_BIND), so
 * that reclaim runs on top (kswapd, then direct reclaim); where the cold pages are then. */
static struct where reclaim_cold(int top, int far, size_t n, uint64_t seed, char **region)
{
	enum { OVER_KB = 64 << 10 }; /* past the node's free memory: reclaim must free this much */
	struct where w = { 0, 0, 0, 0 };
	int st[1024];
	char *r = *region = anon_pages_on(top, n, seed);
	if (!r || expect_on_node("precondition: pages where MPOL_BIND put them", 0, r, n, top))
		return w;
	madvise(r, n * PAGE, 20 /* MADV_COLD: to the inactive list's tail */);
	long free_kb = node_free_kb(top);
	size_t fill = (size_t)(free_kb + OVER_KB) / 4;
	char *filler = mmap(NULL, fill * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (free_kb < 0 || filler == MAP_FAILED) {
		failf("cannot map %ld kB more than node %d's MemFree", (long)OVER_KB, top);
		return w;
	}
	bind_task_to(top);
	for (size_t i = 0; i < fill; i++)
		filler[i * PAGE] = 1;
	bind_task_to(-1);
	query_pages(0, r, n, st);
	munmap(filler, fill * PAGE);
	for (size_t i = 0; i < n; i++)
		st[i] == top ? w.top++ : st[i] == far ? w.far++ : st[i] == -ENOENT ? w.swapped++ : w.other++;
	diag("node %d filled (%ld kB free, %ld kB more asked): of %zu cold pages %ld still there, %ld on node %d, "
	     "%ld swapped out, %ld elsewhere", top, free_kb, (long)OVER_KB, n, w.top, w.far, far, w.swapped, w.other);
	return w;
}

/* pgdemote_* are per-cpu node counters: folded first, so that demotions of one half are not
 * counted in the next (seen on 6.12: +21 with demotion off, all of them from the half before). */
static long long demoted(void)
{
	vmstat_refresh();
	return vmstat_get("pgdemote_kswapd") + vmstat_get("pgdemote_direct");
}

/* pgdemote_* once kswapd has stopped demoting (unchanged for 200 ms, at most 5 s): the trace
 * events read after it then count the same demotions (on 6.1 kswapd went on demoting the
 * filler after the count: 20303 pages in the events against 256 + 19837 counted). */
static long long demoted_settled(void)
{
	long long last = demoted(), now;
	for (int i = 0; i < 25; i++, last = now) {
		usleep(200000);
		if ((now = demoted()) == last)
			break;
	}
	return last;
}

int case_demotion(void)
{
	enum { N = 256 };
	struct topo t;
	int top, far;
	topo_read(&t);
	tier_pair(&t, &top, &far);
	if (!swap_active())
		return skip("needs: an active swap device (to see reclaim choose demotion over swap)");
	diag("top-tier node %d (memory_tier%d), lower-tier node %d (memory_tier%d)", top, tier_of(top), far,
	     tier_of(far));

	/* Demotion on: reclaim on the top tier moves cold pages down instead of swapping them;
	 * the lower tier has room, so nothing is swapped. */
	if (setting_write("/sys/kernel/mm/numa/demotion_enabled", "true"))
		return failf("cannot enable /sys/kernel/mm/numa/demotion_enabled: %s", errname(errno)), FAIL;
	long long d0 = demoted(), s0 = vmstat_get("pswpout");
	struct trace_mark t0 = trace_mark(REASON_DEMOTION);
	char *r;
	struct where w = reclaim_cold(top, far, N, 131, &r);
	long long dd = demoted_settled() - d0, ds = vmstat_get("pswpout") - s0;
	CHECK(w.far > 0 && w.swapped == 0 && ds == 0, "with demotion on, %ld of %d cold pages went to node %d and %ld "
	      "to swap (pswpout +%lld), expected some demoted and swap untouched", w.far, N, far, w.swapped, ds);
	CHECK(dd >= w.far, "pgdemote_kswapd + pgdemote_direct grew by %lld, expected >= %ld (the pages on node %d)", dd,
	      w.far, far);
	diag("pgdemote +%lld, pswpout +%lld", dd, ds);
	expect_trace("reclaim with demotion on", REASON_DEMOTION, t0, w.far, w.far + dd, TRACE_ANY_FAILED);
	check_pattern("the demoted pages", r, 0, N, 131);

	/* Demotion off: the same reclaim swaps them out. */
	setting_write("/sys/kernel/mm/numa/demotion_enabled", "false");
	d0 = demoted(), s0 = vmstat_get("pswpout");
	w = reclaim_cold(top, far, N, 132, &r);
	dd = demoted_settled() - d0, ds = vmstat_get("pswpout") - s0;
	CHECK(w.far == 0 && w.swapped > 0 && dd == 0 && ds >= w.swapped, "with demotion off, %ld cold pages went to "
	      "node %d and %ld to swap (pgdemote +%lld, pswpout +%lld), expected none demoted, some swapped", w.far, far,
	      w.swapped, dd, ds);
	check_pattern("the swapped-out pages, read back", r, 0, N, 132);
	return PASS;
}
