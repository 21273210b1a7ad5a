/* The topology suite (migrate_suite --topology): cases that need a machine other than the
 * default two nodes. Each row of its table states what it needs (TOPO_* bits); the runner
 * reports an unmet need as "# SKIP needs: ..." (topology_unmet). Cases: three_node_migrate_pages,
 * memoryless_target, memoryless_local_alloc, cpuless_place_move. */
#include "suite.h"

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

/* migrate_pages(child, from -> to) with the child's pages in three parts on n[0], n[1], n[2];
 * expect part i on want[i], the data intact, and `moves` page migrations per page of the
 * parts (counted by the trace events: a page moved twice counts twice). */
static void migrate_three(struct helper *child, char *r, size_t part, const int n[3], const int *from, int nfrom,
                          const int *to, const int want[3], const int moves[3])
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
	unsigned long old[2] = { 0, 0 }, new_[2] = { 0, 0 };
	char what[128];
	int len = snprintf(what, sizeof(what), "migrate_pages {");
	for (int i = 0; i < nfrom; i++)
		old[from[i] / 64] |= 1UL << (from[i] % 64), len += snprintf(what + len, sizeof(what) - len, "%s%d",
									 i ? "," : "", from[i]);
	len += snprintf(what + len, sizeof(what) - len, "} -> {");
	for (int i = 0; i < nfrom; i++)
		new_[to[i] / 64] |= 1UL << (to[i] % 64), len += snprintf(what + len, sizeof(what) - len, "%s%d",
									 i ? "," : "", to[i]);
	snprintf(what + len, sizeof(what) - len, "}");
	/* The child's other pages (stack, data) on the source nodes move too: the upper bound. */
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

int case_three_node_migrate_pages(void)
{
	enum { PART = 32 };
	struct topo t;
	topo_read(&t);
	const int *n = t.mem; /* the first three nodes with memory */
	char *r = map_region(3 * PART, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct helper child;
	if (!r || helper_start(&child, r, 3 * PART, n[0], 51))
		return FAIL;
	/* {a,b} -> {b,c}: a->b, b->c. The kernel moves b->c first (c is no source), then a->b:
	 * no page moves twice, c's pages stay. */
	migrate_three(&child, r, PART, n, (int[]){ n[0], n[1] }, 2, (int[]){ n[1], n[2] },
		      (int[]){ n[1], n[2], n[2] }, (int[]){ 1, 1, 0 });
	/* {a,b,c} -> {b,c,a}: every destination is a source, so do_migrate_pages() starts with the
	 * last pair (c->a), then b->c, then a->b, which carries c's pages a second time: they end
	 * on b (mm/mempolicy.c, do_migrate_pages(): a rotation is not a permutation). */
	migrate_three(&child, r, PART, n, (int[]){ n[0], n[1], n[2] }, 3, (int[]){ n[1], n[2], n[0] },
		      (int[]){ n[1], n[2], n[1] }, (int[]){ 1, 1, 2 });
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
