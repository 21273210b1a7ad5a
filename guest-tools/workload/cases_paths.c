/* Cases of the kernel's other paths into migrate_pages(): compaction, soft_offline,
 * numa_balancing, contig_range (see README.md). Each checks the data, where the pages
 * are (node; PFN from /proc/self/pagemap), the path's counters and its trace events. */
#include "suite.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef MADV_SOFT_OFFLINE
#define MADV_SOFT_OFFLINE 101
#endif

#define NR_PAGES_PER_HPAGE (HPAGE / PAGE)

/* Nodes of each page in a list of addresses (move_pages query); how many are not on node. */
static long pages_not_on(char **pages, size_t n, int node, const char *what)
{
	int *st = calloc(n, sizeof(int));
	for (size_t i = 0; i < n; i++)
		st[i] = STATUS_UNSET;
	long r = sys_move_pages(0, n, (void **)pages, NULL, st, 0), off = 0;
	for (size_t i = 0; i < n; i++)
		if (st[i] != node) {
			if (!off)
				failf("%s: page %zu is on %s, expected node %d", what, i, statusname(st[i]), node);
			off++;
		}
	CHECK(r == 0, "%s: move_pages query returned %ld (%s), expected 0", what, r, errname(errno));
	free(st);
	return off;
}

static int need_pfns(void)
{
	static char probe[PAGE];
	probe[0] = 1;
	return geteuid() == 0 && pfn_of(probe) != 0;
}

/* The first CMA area in debugfs (CONFIG_CMA_DEBUGFS), its files. */
static int cma_area(char *dir, size_t n)
{
	DIR *d = opendir("/sys/kernel/debug/cma");
	struct dirent *e;
	int found = 0;
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.' && !found) {
			snprintf(dir, n, "/sys/kernel/debug/cma/%.64s", e->d_name);
			found = 1;
		}
	if (d)
		closedir(d);
	return found ? 0 : -1;
}

static long cma_read(const char *dir, const char *name)
{
	char p[160];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return sysfs_long(p);
}

static int cma_write(const char *dir, const char *name, long v)
{
	char p[160], val[32];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	snprintf(val, sizeof(val), "%ld", v);
	return sysfs_write(p, val);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* With THP the kernel raises min_free_kbytes to tens of MiB (about 34 MiB high watermark
 * per node here): a node filled for a case would sit below it, and kswapd would swap the
 * case's pages out. Lower it for the case (the runner restores it after the case). */
static void low_watermarks(void)
{
	if (setting_write("/proc/sys/vm/min_free_kbytes", "8192"))
		failf("writing 8192 to /proc/sys/vm/min_free_kbytes: %s, expected success", errname(errno));
}

/* Free pages of node outside CMA areas above each zone's high watermark (kswapd's
 * measure: it does not count free CMA pages). */
static long node_room(int node)
{
	struct zone_info z[16];
	long room = 0;
	for (int i = 0, nz = zones_get(z, 16); i < nz; i++) {
		long r = z[i].free - z[i].free_cma - z[i].high;
		room += z[i].node == node && r > 0 ? r : 0;
	}
	return room;
}

/* ------------------------------------------------------------------ compaction */

/* Free blocks of 2 MiB (order 9) or more on node, counted in 2 MiB blocks (/proc/buddyinfo). */
static long free_2m_blocks(int node)
{
	FILE *f = fopen("/proc/buddyinfo", "re");
	char line[512];
	long n = 0;
	while (f && fgets(line, sizeof(line), f)) {
		int nd, off = 0, used, order = 0;
		long count;
		if (sscanf(line, "Node %d, zone %*s%n", &nd, &off) < 1 || !off || nd != node)
			continue;
		for (char *p = line + off; sscanf(p, "%ld%n", &count, &used) == 1; p += used, order++)
			n += order >= 9 ? count << (order - 9) : 0;
	}
	if (f)
		fclose(f);
	return n;
}

/* A fresh 2 MiB THP region faulted (one byte) while bound to node: 1 if a huge page backs
 * it (smaps AnonHugePages), 0 if the fault fell back to a small page. */
static int thp_fault_on(int node)
{
	char *r = map_thp_region();
	if (!r)
		return -1;
	bind_task_to(node);
	r[0] = 1;
	bind_task_to(-1);
	return smaps_get_kb(0, (unsigned long)r, "AnonHugePages") == 2048;
}

/* Node C is made small and fragmented: its free 2 MiB blocks go to the hugetlb pool
 * (compaction leaves hugetlb pages alone) except K + SPARE, and our pages fill K of them.
 * In the lower half of those blocks (by PFN) every page of ours with an odd PFN is freed
 * again, in the upper half all but 1 in 64 (a wholly free block is no target for
 * compaction's free scanner): the migration scanner (from the zone's start) meets our
 * fragmented blocks before the free scanner (from the end) runs out of free pages above. Compacting C must move our kept pages (new PFNs, same data,
 * same node); the counters and the trace agree. */
int case_compaction(void)
{
	enum { K = 16, SPARE = 16 }; /* blocks our pages fragment; blocks left free */
	const uint64_t SEED = 91;
	const int C = g_node_b;
	const size_t n = K * NR_PAGES_PER_HPAGE;
	char compact[96];
	snprintf(compact, sizeof(compact), "/sys/devices/system/node/node%d/compact", C);
	if (!need_pfns())
		return skip("needs root and PFNs in /proc/self/pagemap");
	if (access(compact, W_OK))
		return skip("%s: %s (CONFIG_COMPACTION?)", compact, errname(errno));
	long huge0 = hugetlb_node_pages(C);
	if (huge0 < 0)
		return skip("no hugetlb pool on node %d (CONFIG_HUGETLBFS?): it fills the node", C);
	setting_write("/proc/sys/vm/compaction_proactiveness", "0"); /* 5.9+: no compaction on its own */
	low_watermarks();
	few_pcp_pages();
	long room = node_room(C);
	long fill = (room - (K + SPARE) * (long)NR_PAGES_PER_HPAGE) / (long)NR_PAGES_PER_HPAGE;
	long huge = hugetlb_node_set(C, huge0 + (fill > 0 ? fill : 0));
	diag("node %d: %ld free pages outside CMA above the high watermark; hugetlb pool %ld -> %ld pages", C, room,
	     huge0, huge);
	uint64_t *pfn = calloc(n, sizeof(uint64_t)), *pfn2 = calloc(n, sizeof(uint64_t));
	char **kept = calloc(n, sizeof(char *));
	size_t nk = 0, moved = 0;
	char *r = anon_pages_on(C, n, SEED);
	if (!r || pfns_of(r, n, pfn)) {
		failf("our pages on node %d, their PFNs from /proc/self/pagemap: %s, expected success", C, errname(errno));
		goto out;
	}
	uint64_t *order = malloc(n * sizeof(uint64_t));
	memcpy(order, pfn, n * sizeof(uint64_t));
	qsort(order, n, sizeof(uint64_t), cmp_u64);
	const uint64_t upper = order[n / 2] >> 9; /* 2 MiB blocks from here on keep 1 page in 64 */
	free(order);
	for (size_t i = 0; i < n; i++) {
		if ((pfn[i] >> 9) < upper ? (pfn[i] & 1) : (pfn[i] & 63))
			madvise(r + i * PAGE, PAGE, MADV_DONTNEED);
		else
			kept[nk++] = r + i * PAGE;
	}
	diag("%zu pages of ours on node %d; kept %zu: those with even PFNs below %#llx, 1 in 64 above", n, C, nk,
	     (unsigned long long)(upper << 9));
	if (pages_not_on(kept, nk, C, "precondition: our pages on node C"))
		goto out;

	/* A THP fault must fall back before compaction and get a huge page after. With defrag
	 * "never" a THP fault takes a free 2 MiB block or falls back, and never compacts or
	 * reclaims itself: THPs of ours take the node's free blocks until one fault falls back. */
	int thp = thp_available() && !setting_write("/sys/kernel/mm/transparent_hugepage/defrag", "never");
	if (thp) {
		int absorbed = 0, huge;
		while ((huge = thp_fault_on(C)) == 1 && absorbed < 256)
			absorbed++;
		diag("%d THPs of ours took node %d's free 2 MiB blocks, then a THP fault fell back; free 2 MiB blocks "
		     "left (buddyinfo): %ld", absorbed, C, free_2m_blocks(C));
		CHECK(huge == 0, "a THP fault on node %d after %d huge ones got %s, expected the node to run out of free "
		      "2 MiB blocks", C, absorbed, huge == 1 ? "a huge page" : "no mapping");
	}

	const char *ctr[] = { "compact_migrate_scanned", "compact_free_scanned", "compact_isolated", "pgmigrate_success" };
	long long c0[4], d[4];
	for (int i = 0; i < 4; i++)
		c0[i] = vmstat_get(ctr[i]);
	struct trace_mark m0 = trace_mark(REASON_COMPACTION);
	double t0 = now_s();
	CHECK(sysfs_write(compact, "1") == 0, "writing 1 to %s: %s, expected success", compact, errname(errno));
	diag("compacting node %d took %.2f s", C, now_s() - t0);
	for (size_t k = 0; k < nk; k++)
		check_pattern("our pages after compacting the node", r, (size_t)(kept[k] - r) / PAGE, 1, SEED);
	if (pfns_of(r, n, pfn2) == 0)
		for (size_t k = 0; k < nk; k++) {
			size_t i = (size_t)(kept[k] - r) / PAGE;
			moved += pfn2[i] != pfn[i];
		}
	pages_not_on(kept, nk, C, "our pages after compaction (it moves pages within a zone)");
	for (int i = 0; i < 4; i++)
		d[i] = vmstat_get(ctr[i]) - c0[i];
	diag("%zu of our %zu pages got a new PFN; %s +%lld, %s +%lld, %s +%lld, %s +%lld", moved, nk, ctr[0], d[0],
	     ctr[1], d[1], ctr[2], d[2], ctr[3], d[3]);
	CHECK(moved * 2 >= nk, "%zu of our %zu kept pages have a new PFN after compaction, expected at least half "
	      "(the lower blocks' pages move into the upper blocks)", moved, nk);
	if (thp) {
		long blocks = free_2m_blocks(C);
		int huge = thp_fault_on(C);
		diag("after compaction: %ld free 2 MiB blocks on node %d (buddyinfo); a THP fault got %s", blocks, C,
		     huge == 1 ? "a huge page" : "small pages");
		CHECK(huge == 1, "a THP fault on node %d after compacting it got small pages (%ld free 2 MiB blocks), "
		      "expected a huge page: the blocks our pages left are free", C, blocks);
	}
	for (int i = 0; i < 3; i++)
		CHECK(d[i] > 0, "%s grew by %lld, expected > 0", ctr[i], d[i]);
	CHECK(d[3] >= (long long)moved, "pgmigrate_success grew by %lld, expected >= %zu (our moved pages)", d[3], moved);
	expect_trace("compacting the node", REASON_COMPACTION, m0, (long)moved, LONG_MAX, TRACE_ANY_FAILED);

	/* /proc/sys/vm/compact_memory compacts every node: it scans, and the data stays. */
	long long s0 = vmstat_get(ctr[0]);
	CHECK(sysfs_write("/proc/sys/vm/compact_memory", "1") == 0, "writing 1 to /proc/sys/vm/compact_memory: %s, "
	      "expected success", errname(errno));
	CHECK(vmstat_get(ctr[0]) > s0, "compact_migrate_scanned did not grow after /proc/sys/vm/compact_memory, "
	      "expected it to");
	for (size_t k = 0; k < nk; k++)
		check_pattern("our pages after compact_memory", r, (size_t)(kept[k] - r) / PAGE, 1, SEED);
out:
	free(pfn);
	free(pfn2);
	free(kept);
	unmap_region(r, n);
	hugetlb_node_set(C, huge0);
	return PASS;
}

/* ---------------------------------------------------------------- soft_offline */

struct offlined {
	uint64_t pfn[8];
	int n;
};

/* madvise(MADV_SOFT_OFFLINE) on page idx of npages at base (all with `seed`): the page
 * gets a new PFN on the same node, keeps its data, its old PFN is poisoned; the other
 * pages keep their PFNs. */
static void soft_offline_one(const char *what, char *base, size_t npages, size_t idx, uint64_t seed, int node,
                             struct offlined *off)
{
	uint64_t *before = calloc(npages, 8), *after = calloc(npages, 8);
	pfns_of(base, npages, before);
	long long hc0 = meminfo_kb("HardwareCorrupted");
	struct trace_mark m0 = trace_mark(REASON_MEMORY_FAILURE);
	int r = madvise(base + idx * PAGE, PAGE, MADV_SOFT_OFFLINE);
	CHECK(r == 0, "%s: madvise(MADV_SOFT_OFFLINE) returned %d (%s), expected 0", what, r, errname(r ? errno : 0));
	pfns_of(base, npages, after);
	uint64_t old = before[idx], new_ = after[idx];
	diag("%s: page %zu PFN %#llx -> %#llx", what, idx, (unsigned long long)old, (unsigned long long)new_);
	CHECK(old && new_ && new_ != old, "%s: PFN of the offlined page %#llx -> %#llx, expected a new PFN", what,
	      (unsigned long long)old, (unsigned long long)new_);
	for (size_t i = 0; i < npages; i++)
		CHECK(i == idx || after[i] == before[i], "%s: page %zu moved from PFN %#llx to %#llx, expected only page "
		      "%zu to move", what, i, (unsigned long long)before[i], (unsigned long long)after[i], idx);
	int hw_old = kpageflag(old, KPF_HWPOISON_BIT), hw_new = kpageflag(new_, KPF_HWPOISON_BIT);
	CHECK(hw_old == 1 && hw_new == 0, "%s: /proc/kpageflags HWPOISON of the old PFN %d, of the new %d, expected 1 "
	      "and 0", what, hw_old, hw_new);
	long long dhc = meminfo_kb("HardwareCorrupted") - hc0;
	CHECK(dhc == 4, "%s: HardwareCorrupted grew by %lld kB, expected 4 (one page poisoned)", what, dhc);
	check_pattern(what, base, 0, npages, seed);
	expect_on_node(what, 0, base + idx * PAGE, 1, node);
	expect_trace(what, REASON_MEMORY_FAILURE, m0, 1, 1, 0);
	if (off->n < 8)
		off->pfn[off->n++] = old;
	free(before);
	free(after);
}

/* A shared file mapping of 4 pages on node, written through the mapping (dirty). */
static char *dirty_file_pages(const char *path, int node, uint64_t seed, int *fd)
{
	*fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (*fd < 0 || ftruncate(*fd, 4 * PAGE)) {
		failf("creating %s: %s, expected success", path, errname(errno));
		return NULL;
	}
	char *m = map_region(4, MAP_SHARED, *fd, 0);
	if (m) {
		bind_task_to(node);
		fill_pattern(m, 0, 4, seed);
		bind_task_to(-1);
	}
	return m;
}

int case_soft_offline(void)
{
	enum { EXTRA = 4096 };
	const int A = g_node_a;
	if (!need_pfns())
		return skip("needs root and PFNs in /proc/self/pagemap");
	if (meminfo_kb("HardwareCorrupted") < 0)
		return skip("no HardwareCorrupted in /proc/meminfo (CONFIG_MEMORY_FAILURE?)");
	struct offlined off = { .n = 0 };

	/* Unprivileged: EPERM, nothing moves. */
	char *u = anon_pages_on(A, 1, 100);
	uint64_t upfn = u ? pfn_of(u) : 0;
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		g_failures = 0;
		if (become_nobody() == 0) {
			int r = madvise(u, PAGE, MADV_SOFT_OFFLINE);
			CHECK(r == -1 && errno == EPERM, "unprivileged madvise(MADV_SOFT_OFFLINE) returned %d (%s), "
			      "expected EPERM", r, errname(r ? errno : 0));
		}
		_exit(g_failures ? 1 : 0);
	}
	CHECK(wait_child(pid, 10, "unprivileged child") == 0, "the unprivileged child's checks failed");
	CHECK(pfn_of(u) == upfn, "after the unprivileged madvise the page's PFN changed, expected the same");

	/* Private anonymous pages. */
	char *a = anon_pages_on(A, 4, 101);
	if (!a)
		return FAIL;
	soft_offline_one("private anonymous page", a, 4, 1, 101, A, &off);

	/* Dirty page cache on ext4; after the move it still reaches the disk. */
	int fd;
	char path[128];
	snprintf(path, sizeof(path), "/mnt/scratch/migrate_suite_so.%d", (int)getpid());
	char *e = dirty_file_pages(path, A, 102, &fd);
	if (e) {
		soft_offline_one("dirty ext4 page-cache page", e, 4, 1, 102, A, &off);
		unmap_region(e, 4);
		CHECK(fsync(fd) == 0 && drop_caches() == 0, "fsync + drop_caches: %s, expected success", errname(errno));
		char *buf = malloc(4 * PAGE);
		CHECK(pread(fd, buf, 4 * PAGE, 0) == (ssize_t)(4 * PAGE), "pread: %s", errname(errno));
		check_pattern("the ext4 file read back from disk after the soft offline", buf, 0, 4, 102);
		free(buf);
		close(fd);
		unlink(path);
	}

	/* tmpfs. */
	snprintf(path, sizeof(path), "/tmp/migrate_suite_so.%d", (int)getpid());
	char *s = dirty_file_pages(path, A, 103, &fd);
	if (s) {
		soft_offline_one("tmpfs page", s, 4, 2, 103, A, &off);
		unmap_region(s, 4);
		close(fd);
		unlink(path);
	}

	/* A THP: split, then the one page moves; the other 511 keep their PFNs. */
	if (thp_available()) {
		char *t = map_thp_region();
		if (!t)
			return FAIL;
		bind_task_to(A);
		fill_pattern(t, 0, NR_PAGES_PER_HPAGE, 104);
		bind_task_to(-1);
		long kb = smaps_get_kb(0, (unsigned long)t, "AnonHugePages");
		if (kb != 2048)
			diag("no THP on node %d (AnonHugePages %ld kB): the THP part is not run", A, kb);
		else {
			long long sp0 = vmstat_get("thp_split_page");
			soft_offline_one("a page of a THP", t, NR_PAGES_PER_HPAGE, 5, 104, A, &off);
			kb = smaps_get_kb(0, (unsigned long)t, "AnonHugePages");
			long long dsp = vmstat_get("thp_split_page") - sp0;
			CHECK(kb == 0 && dsp == 1, "after soft offlining a page of a THP: AnonHugePages %ld kB, "
			      "thp_split_page +%lld, expected 0 kB and +1 (split first)", kb, dsp);
		}
		munmap(t, HPAGE);
	}

	/* Offlining the same page again: 0, it is a new page now. Then: the poisoned PFNs are
	 * never handed out again, however much is allocated on the node. */
	char *x = anon_pages_on(A, EXTRA, 105);
	uint64_t *xp = calloc(EXTRA, 8);
	if (x && pfns_of(x, EXTRA, xp) == 0)
		for (size_t i = 0; i < EXTRA; i++)
			for (int k = 0; k < off.n; k++)
				CHECK(xp[i] != off.pfn[k], "the poisoned PFN %#llx was handed out again (page %zu of %d "
				      "new pages on node %d), expected never", (unsigned long long)off.pfn[k], i, EXTRA, A);
	check_pattern("new pages", x, 0, EXTRA, 105);
	free(xp);
	unmap_region(x, EXTRA);
	return PASS;
}

/* -------------------------------------------------------------- numa_balancing */

struct nb_shared {
	volatile int go, stop, verified, quit;
};

/* The worker: its own pages on A (both regions; the second bound to A by mbind); once the
 * case has seen them there (go), it runs on B's CPUs and keeps reading them until told to
 * stop, then checks its data. (With the scan knobs tuned, pages begin to move within
 * milliseconds of the worker's first run on B: the precondition is checked before.) */
static void nb_worker(struct nb_shared *sh, char *freer, char *bound, size_t n, int A, int B)
{
	g_failures = 0;
	unsigned long maskA[2];
	nodemask_of(maskA, A);
	bind_task_to(A);
	fill_pattern(freer, 0, n, 111);
	fill_pattern(bound, 0, n, 112);
	bind_task_to(-1);
	CHECK(sys_mbind(bound, n * PAGE, MPOL_BIND, maskA, MAXNODE, 0) == 0, "mbind(BIND{%d}): %s, expected 0", A,
	      errname(errno));
	sh->verified = 1; /* ready */
	while (!sh->go)
		usleep(1000);
	run_on_node_cpus(B);
	while (!sh->stop) {
		touch_read(freer, n);
		touch_read(bound, n);
	}
	check_pattern("the worker's pages, not bound", freer, 0, n, 111);
	check_pattern("the worker's pages bound to A", bound, 0, n, 112);
	sh->verified = g_failures ? 3 : 2;
	while (!sh->quit)
		usleep(1000);
	_exit(g_failures ? 1 : 0);
}

int case_numa_balancing(void)
{
	enum { N = 64, WAIT_S = 25 };
	const int A = g_node_a, B = g_node_b;
	if (access("/proc/sys/kernel/numa_balancing", W_OK))
		return skip("no /proc/sys/kernel/numa_balancing (CONFIG_NUMA_BALANCING?)");
	if (!node_has_cpus(B)) /* the worker touches its pages from B's CPUs */
		return skip("needs: CPUs on node %d (a CPU-less node)", B);
	/* Scan quickly (the knobs are in debugfs with CONFIG_SCHED_DEBUG from 5.13, sysctls
	 * before; without either the defaults: a first scan after about 1 s of runtime). */
	const char *knob[][2] = { { "scan_delay_ms", "0" }, { "scan_period_min_ms", "10" },
	                          { "scan_period_max_ms", "200" }, { "scan_size_mb", "16" } };
	int tuned = 0;
	for (int i = 0; i < 4; i++) {
		char p[128];
		snprintf(p, sizeof(p), "/sys/kernel/debug/sched/numa_balancing/%s", knob[i][0]);
		if (access(p, W_OK))
			snprintf(p, sizeof(p), "/proc/sys/kernel/numa_balancing_%s", knob[i][0]);
		tuned += setting_write(p, knob[i][1]) == 0;
	}
	if (setting_write("/proc/sys/kernel/numa_balancing", "1")) {
		failf("writing 1 to /proc/sys/kernel/numa_balancing: %s, expected success", errname(errno));
		return FAIL;
	}
	const char *ctr[] = { "numa_hint_faults", "numa_pages_migrated", "numa_pte_updates" };
	long long c0[3];
	for (int i = 0; i < 3; i++)
		c0[i] = vmstat_get(ctr[i]);
	struct trace_mark m0 = trace_mark(REASON_NUMA_MISPLACED);
	char *freer = map_region(N, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), *bound = map_region(N, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct nb_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (!freer || !bound || sh == MAP_FAILED)
		goto out;
	fflush(stdout);
	pid_t pid = fork(); /* a new mm: its first scan is scan_delay_ms after this */
	if (pid == 0)
		nb_worker(sh, freer, bound, N, A, B);
	double t0 = now_s();
	while (!sh->verified && now_s() < t0 + 10)
		usleep(1000);
	struct numa_line nl = { .found = 0 };
	if (expect_numa_maps("precondition: the worker's pages on A", pid, freer, A, N) ||
	    expect_numa_maps("precondition: the worker's bound pages on A", pid, bound, A, N))
		goto stop;
	sh->go = 1;
	t0 = now_s();
	while (now_s() < t0 + WAIT_S && (numa_maps_get(pid, (unsigned long)freer, &nl) || nl.n[B] < N))
		usleep(20000);
	diag("numa_balancing on (%d knobs tuned): %ld of %d pages on node %d after %.2f s", tuned, nl.n[B], N, B,
	     now_s() - t0);
stop:
	sh->go = sh->stop = 1;
	while (sh->verified < 2 && now_s() < t0 + WAIT_S + 10)
		usleep(1000);
	CHECK(sh->verified == 2, "the worker's own data check: %d, expected 2 (data intact)", sh->verified);
	expect_on_node("the worker's pages (not bound), touched from node B's CPUs", pid, freer, N, B);
	expect_on_node("the worker's pages bound to A by mbind (left alone)", pid, bound, N, A);
	long rss = status_get_kb(pid, "VmRSS") / 4;
	sh->quit = 1;
	CHECK(wait_child(pid, 10, "numa balancing worker") == 0, "the worker exited with a failure, expected 0");
	long long d[3];
	for (int i = 0; i < 3; i++)
		d[i] = vmstat_get(ctr[i]) - c0[i];
	diag("%s +%lld, %s +%lld, %s +%lld", ctr[0], d[0], ctr[1], d[1], ctr[2], d[2]);
	for (int i = 0; i < 3; i++)
		CHECK(d[i] >= N, "%s grew by %lld, expected >= %d (every page of the region)", ctr[i], d[i], N);
	/* our N pages, and at most the worker's other pages (stack, data) */
	expect_trace("NUMA balancing", REASON_NUMA_MISPLACED, m0, N, rss > N ? rss : N, TRACE_ANY_FAILED);
out:
	return PASS; /* the runner turns numa_balancing and the knobs back */
}

/* ---------------------------------------------------------------- contig_range */

/* User pages in the CMA area, then CMA's alloc of the whole area: they must move out. */
int case_contig_range(void)
{
	enum { P = 4096, MARGIN = 2048 /* pages */ };
	const uint64_t SEED = 121;
	char dir[128];
	if (!need_pfns())
		return skip("needs root and PFNs in /proc/self/pagemap");
	if (cma_area(dir, sizeof(dir)))
		return skip("no CMA area in /sys/kernel/debug/cma (cma= on the command line, CONFIG_CMA_DEBUGFS)");
	long base = cma_read(dir, "base_pfn"), count = cma_read(dir, "count"), used0 = cma_read(dir, "used");
	struct zone_info z;
	if (base < 0 || count <= 0 || zone_of_pfn((uint64_t)base, &z)) {
		failf("CMA area %s: base_pfn %ld, count %ld, no zone in /proc/zoneinfo holds it; expected one", dir, base,
		      count);
		return FAIL;
	}
	const int C = z.node;
	diag("CMA area %s: PFNs [%#lx, %#lx), %ld pages used; node %d zone %s: %ld free, %ld of them CMA", dir, base,
	     base + count, used0, C, z.name, z.free, z.free_cma);
	CHECK(used0 == 0, "the CMA area has %ld pages in use before the case, expected 0", used0);
	long huge0 = hugetlb_node_pages(C);
	if (huge0 < 0)
		return skip("no hugetlb pool on node %d (CONFIG_HUGETLBFS?): it fills the node", C);
	run_on_cpu_of(C);
	low_watermarks();
	zone_of_pfn((uint64_t)base, &z);
	/* Movable allocations take CMA pages only when the zone's free CMA pages exceed half of
	 * its free pages (__rmqueue()): fill the zone (hugetlb pages, not from CMA while that is
	 * not so) until the other free pages are just above the free CMA ones. */
	long fill = (z.free - z.free_cma - z.free_cma - MARGIN) / (long)NR_PAGES_PER_HPAGE;
	long huge = hugetlb_node_set(C, huge0 + (fill > 0 ? fill : 0));
	zone_of_pfn((uint64_t)base, &z);
	diag("hugetlb pool on node %d: %ld -> %ld pages; zone %s now %ld free, %ld of them CMA", C, huge0, huge, z.name,
	     z.free, z.free_cma);
	/* The zone's free counts move while we fault (per-CPU lists, kswapd): when too few
	 * pages landed in the area, keep them as ballast (fewer other free pages) and fault
	 * the next P. */
	enum { TRIES = 4 };
	char *r = NULL, *ballast[TRIES] = { 0 };
	uint64_t *pfn = calloc(P, 8);
	long in = 0;
	for (int t = 0; t < TRIES && in < 64; t++) {
		ballast[t] = r;
		r = map_region(P, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (!r)
			goto out;
		/* locked as they fault in (MLOCK_ONFAULT): never reclaimed; still migratable (CMA
		 * isolates unevictable pages too) */
		CHECK(syscall(SYS_mlock2, r, P * PAGE, 1) == 0, "mlock2(MLOCK_ONFAULT): %s, expected 0", errname(errno));
		bind_task_to(C);
		fill_pattern(r, 0, P, SEED);
		bind_task_to(-1);
		pfns_of(r, P, pfn);
		in = 0;
		for (int i = 0; i < P; i++)
			in += pfn[i] >= (uint64_t)base && pfn[i] < (uint64_t)(base + count);
		diag("%ld of our %d pages are in the CMA area (try %d)", in, P, t + 1);
	}
	CHECK(in >= 64, "precondition: %ld of %d user pages in the CMA area after %d tries, expected >= 64", in, P,
	      TRIES);
	if (g_failures)
		goto out;

	struct trace_mark m0 = trace_mark(REASON_CONTIG_RANGE);
	double t0 = now_s();
	int ret = cma_write(dir, "alloc", count);
	CHECK(ret == 0, "echo %ld > %s/alloc: %s, expected success (the user pages migrated out)", count, dir,
	      errname(errno));
	diag("CMA alloc of %ld pages: %.2f s", count, now_s() - t0);
	long used = cma_read(dir, "used");
	CHECK(ret != 0 || used == count, "CMA area: %ld pages used after the alloc, expected %ld", used, count);
	pfns_of(r, P, pfn);
	long still = 0;
	for (int i = 0; i < P; i++)
		if (pfn[i] >= (uint64_t)base && pfn[i] < (uint64_t)(base + count)) {
			if (!still)
				failf("page %d still at PFN %#llx, inside the allocated CMA area, expected moved out", i,
				      (unsigned long long)pfn[i]);
			still++;
		} else
			CHECK(pfn[i], "page %d is not present after the CMA alloc, expected it still mapped", i);
	CHECK(still == 0, "%ld pages still in the CMA area, expected 0", still);
	check_pattern("user pages after CMA's alloc", r, 0, P, SEED);
	expect_trace("CMA alloc of the whole area", REASON_CONTIG_RANGE, m0, in, count, TRACE_ANY_FAILED);
	if (ret == 0) {
		CHECK(cma_write(dir, "free", count) == 0, "echo %ld > %s/free: %s, expected success", count, dir,
		      errname(errno));
		used = cma_read(dir, "used");
		CHECK(used == used0, "CMA area: %ld pages used after the free, expected %ld", used, used0);
	}
out:
	unmap_region(r, P);
	for (int t = 0; t < TRIES; t++)
		unmap_region(ballast[t], P);
	free(pfn);
	hugetlb_node_set(C, huge0);
	return PASS;
}
