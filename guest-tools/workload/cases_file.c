/* Cases: file_pages_tmpfs, file_pages_ext4, swap_pages, thp_move. */
#include "suite.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/vfs.h>

#define TMPFS_MAGIC_ 0x01021994
#define EXT4_MAGIC_ 0xEF53

static int fs_is(const char *dir, long magic)
{
	struct statfs s;
	return statfs(dir, &s) == 0 && (long)s.f_type == magic;
}

static int swap_active(void)
{
	FILE *f = fopen("/proc/swaps", "r");
	if (!f)
		return 0;
	char line[256];
	int n = 0;
	while (fgets(line, sizeof(line), f))
		n++;
	fclose(f);
	return n > 1; /* header + at least one device */
}

/* ------------------------------------------------------------- file pages */

static long resident_pages(int fd, size_t npages)
{
	void *m = mmap(NULL, npages * PAGE, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return -1;
	unsigned char vec[1024];
	long n = -1;
	if (npages <= sizeof(vec) && mincore(m, npages * PAGE, vec) == 0) {
		n = 0;
		for (size_t i = 0; i < npages; i++)
			n += vec[i] & 1;
	}
	munmap(m, npages * PAGE);
	return n;
}

static int file_case(const char *dir, int tmpfs)
{
	enum { N = 64, H = N / 2 };
	const int A = g_node_a, B = g_node_b;
	if (!fs_is(dir, tmpfs ? TMPFS_MAGIC_ : EXT4_MAGIC_))
		return skip("%s is not a mounted %s", dir, tmpfs ? "tmpfs" : "ext4");
	if (tmpfs && !swap_active())
		return skip("no active swap device (tmpfs pages are flushed to swap)");
	char path[128];
	snprintf(path, sizeof(path), "%s/migrate_suite.%d.dat", dir, (int)getpid());
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		failf("open %s: %s, expected success", path, errname(errno));
		return FAIL;
	}
	char *buf = malloc(N * PAGE);
	fill_pattern(buf, 0, N, 51);
	/* Page cache pages are allocated by the writer under its policy: node A. */
	bind_task_to(A);
	CHECK(pwrite(fd, buf, N * PAGE, 0) == (ssize_t)(N * PAGE), "pwrite: %s, expected the whole buffer written", errname(errno));
	CHECK(fsync(fd) == 0, "fsync: %s, expected 0", errname(errno));
	bind_task_to(-1);
	char *m = map_region(N, MAP_SHARED, fd, 0);
	if (!m)
		return FAIL;
	touch_read(m, H);         /* first half: clean (written back by fsync), mapped */
	fill_pattern(m, H, H, 52); /* second half: dirtied through the shared mapping */
	diag("%s: %d pages, %d clean + %d dirtied through a MAP_SHARED mapping", path, N, H, H);
	if (expect_on_node("precondition: page cache on node A", 0, m, N, A) ||
	    expect_numa_maps("precondition", 0, m, A, N))
		goto out;

	long long s0 = vmstat_get("pgmigrate_success");
	move_all_expect("file pages moved to node B", m, N, B);
	struct numa_line nl;
	if (numa_maps_get(0, (unsigned long)m, &nl) == 0)
		diag("numa_maps after the move: dirty=%ld mapped=%ld N%d=%ld", nl.dirty, nl.mapped, B, nl.n[B]);
	long long ds = vmstat_get("pgmigrate_success") - s0;
	CHECK(ds >= N, "pgmigrate_success grew by %lld, expected >= %d", ds, N);
	check_pattern("clean half through the mapping after the move", m, 0, H, 51);
	check_pattern("dirty half through the mapping after the move", m, H, H, 52);

	if (tmpfs) {
		/* tmpfs has no backing file: push the (migrated) pages out to swap. A dirty
		 * flag lost by migration lets reclaim drop the page instead: data gone. */
		long long w0 = vmstat_get("pswpout");
		long swap_kb = 0;
		for (int t = 0; t < 5 && swap_kb < (long)(N * PAGE / 1024); t++) {
			CHECK(madvise(m, N * PAGE, MADV_PAGEOUT) == 0, "madvise(MADV_PAGEOUT): %s, expected 0", errname(errno));
			swap_kb = smaps_get_kb(0, (unsigned long)m, "Swap");
		}
		long long dw = vmstat_get("pswpout") - w0;
		diag("tmpfs pages paged out: smaps Swap %ld kB, pswpout +%lld", swap_kb, dw);
		CHECK(swap_kb == (long)(N * PAGE / 1024), "smaps Swap of the tmpfs mapping is %ld kB after MADV_PAGEOUT, "
		      "expected %lu kB (all pages written to swap)", swap_kb, N * PAGE / 1024);
		CHECK(dw >= N, "pswpout grew by %lld, expected >= %d", dw, N);
	}
	unmap_region(m, N);
	m = NULL;
	CHECK(fsync(fd) == 0, "fsync after the move: %s, expected 0", errname(errno));
	CHECK(drop_caches() == 0, "echo 3 > /proc/sys/vm/drop_caches failed: %s, expected success", errname(errno));
	if (!tmpfs) {
		long res = resident_pages(fd, N);
		for (int t = 0; t < 3 && res != 0; t++) {
			usleep(100000);
			drop_caches();
			res = resident_pages(fd, N);
		}
		CHECK(res == 0, "%ld pages still in the page cache after drop_caches (mincore): the re-read would not "
		      "come from disk, expected 0", res);
	}
	memset(buf, 0, N * PAGE);
	CHECK(pread(fd, buf, N * PAGE, 0) == (ssize_t)(N * PAGE), "pread: %s, expected the whole file read", errname(errno));
	check_pattern("clean half re-read after fsync + drop_caches", buf, 0, H, 51);
	check_pattern("dirty half re-read after fsync + drop_caches (data written before the migration)", buf, H, H,
	              52);
out:
	if (m)
		unmap_region(m, N);
	close(fd);
	unlink(path);
	free(buf);
	return PASS;
}

int case_file_pages_tmpfs(void) { return file_case("/tmp", 1); }
int case_file_pages_ext4(void) { return file_case("/mnt/scratch", 0); }

/* ---------------------------------------------------------------- swap */

/* MADV_PAGEOUT until every page is swapped out (query says -ENOENT); a few tries
 * because pages still in a per-CPU LRU batch are skipped by a single call. */
static int page_out(char *r, size_t n)
{
	int *st = malloc(n * sizeof(int));
	int ok = 0;
	for (int t = 0; t < 6 && !ok; t++) {
		if (madvise(r, n * PAGE, MADV_PAGEOUT)) {
			failf("madvise(MADV_PAGEOUT): %s, expected 0", errname(errno));
			break;
		}
		query_pages(0, r, n, st);
		ok = 1;
		for (size_t i = 0; i < n; i++)
			ok &= st[i] == -ENOENT;
		if (!ok)
			usleep(20000);
	}
	free(st);
	return ok;
}

/* Pages alternate between two seeds (even pages: `even`, odd pages: `odd`). */
static long check_alternating(const char *what, char *r, size_t n, uint64_t even, uint64_t odd)
{
	long bad = 0;
	for (size_t i = 0; i < n; i++) {
		if (bad < 3)
			bad += check_pattern(what, r, i, 1, i % 2 ? odd : even) != 0;
		else {
			const uint64_t *w = (const uint64_t *)(r + i * PAGE);
			for (size_t k = 0; k < WORDS_PER_PAGE; k++)
				if (w[k] != pattern_word(i % 2 ? odd : even, i, k)) {
					bad++;
					break;
				}
		}
	}
	if (bad > 3)
		failf("%s: %ld of %zu pages corrupted in all, expected 0", what, bad, n);
	return bad;
}

int case_swap_pages(void)
{
	enum { N = 64 };
	const int A = g_node_a, B = g_node_b;
	int st[N], exp[N];
	if (!swap_active())
		return skip("no active swap device");
	char *r = anon_pages_on(A, N, 71);
	if (!r)
		return FAIL;
	if (expect_on_node("precondition", 0, r, N, A))
		return FAIL;

	/* 1. Page everything out. */
	long long w0 = vmstat_get("pswpout");
	long vs0 = status_get_kb(0, "VmSwap");
	int out = page_out(r, N);
	long long dw = vmstat_get("pswpout") - w0;
	long vs1 = status_get_kb(0, "VmSwap"), sw = smaps_get_kb(0, (unsigned long)r, "Swap");
	diag("paged out: pswpout +%lld, VmSwap %ld -> %ld kB, smaps Swap %ld kB", dw, vs0, vs1, sw);
	CHECK(out, "pages still present after MADV_PAGEOUT, expected the query to say -ENOENT for all");
	CHECK(dw >= N, "pswpout grew by %lld, expected >= %d", dw, N);
	CHECK(sw == (long)(N * PAGE / 1024), "smaps Swap of the region is %ld kB, expected %lu", sw, N * PAGE / 1024);
	/* VmSwap is exact on 6.1; from 6.2 the rss counters are per-CPU and read
	 * approximately (error < 32 pages per CPU): require a clear growth only. */
	long vmin = kernel_at_least(6, 2) ? (long)(N * PAGE / 1024) / 4 : (long)(N * PAGE / 1024);
	CHECK(vs1 - vs0 >= vmin, "VmSwap grew by %ld kB, expected >= %ld kB", vs1 - vs0, vmin);
	if (!out)
		return FAIL;

	/* 2. Move while swapped out: nothing present, per-page -ENOENT, nothing faulted in. */
	long ret = move_region(0, r, N, NULL, B, st, MPOL_MF_MOVE);
	for (int i = 0; i < N; i++)
		exp[i] = -ENOENT;
	CHECK(ret == 0, "move_pages of swapped-out pages returned %ld (%s), expected 0", ret, errname(errno));
	check_status_array("move of swapped-out pages", st, exp, N);
	expect_statuses("query after moving swapped-out pages", 0, r, N, exp);
	sw = smaps_get_kb(0, (unsigned long)r, "Swap");
	CHECK(sw == (long)(N * PAGE / 1024), "smaps Swap %ld kB after the no-op move, expected %lu", sw, N * PAGE / 1024);

	/* 3. Fault back in by reading: swap-cache pages (the swap slot is kept). */
	check_pattern("read back from swap", r, 0, N, 71);
	struct numa_line nl;
	numa_maps_get(0, (unsigned long)r, &nl);
	diag("after swap-in: numa_maps swapcache=%ld N%d=%ld N%d=%ld", nl.swapcache, A, nl.n[A], B, nl.n[B]);
	CHECK(nl.total == N, "numa_maps counts %ld present pages after the swap-in, expected %d", nl.total, N);
	int swapcache_before = (int)nl.swapcache;
	/* Dirty the odd pages: the swap copy of those is now stale. */
	for (int i = 1; i < N; i += 2)
		fill_pattern(r, i, 1, 72);

	/* 4. Move the (swap-cache) pages. */
	int target = nl.n[B] == N ? A : B;
	long need = N - nl.n[target]; /* pages that really have to migrate */
	long long s0 = vmstat_get("pgmigrate_success");
	move_all_expect("swapped-in (swap-cache) pages moved", r, N, target);
	numa_maps_get(0, (unsigned long)r, &nl);
	diag("after the move: numa_maps swapcache=%ld dirty=%ld", nl.swapcache, nl.dirty);
	CHECK(nl.swapcache == swapcache_before, "numa_maps swapcache=%ld after the move, %d before: migration "
	      "dropped pages from the swap cache (expected the same count)", nl.swapcache, swapcache_before);
	long long ds = vmstat_get("pgmigrate_success") - s0;
	CHECK(ds >= need, "pgmigrate_success grew by %lld, expected >= %ld", ds, need);
	check_alternating("after moving swap-cache pages", r, N, 71, 72);

	/* 5. Page out again: the dirtied pages must be written (their swap copy is stale),
	 *    then read everything back from disk. */
	w0 = vmstat_get("pswpout");
	long long in0 = vmstat_get("pswpin");
	out = page_out(r, N);
	dw = vmstat_get("pswpout") - w0;
	CHECK(out, "pages still present after the second MADV_PAGEOUT, expected the query to say -ENOENT for all");
	CHECK(dw >= N / 2, "second page-out wrote %lld pages (pswpout), expected >= %d (the dirtied ones): dirty "
	      "state lost in migration?", dw, N / 2);
	sw = smaps_get_kb(0, (unsigned long)r, "Swap");
	CHECK(sw == (long)(N * PAGE / 1024), "smaps Swap %ld kB after the second page-out, expected %lu", sw,
	      N * PAGE / 1024);
	check_alternating("read back after the second page-out", r, N, 71, 72);
	long long din = vmstat_get("pswpin") - in0;
	diag("second page-out: pswpout +%lld; read back: pswpin +%lld", dw, din);
	CHECK(din >= N / 2, "pswpin grew by %lld on the read-back, expected >= %d (the clean pages were dropped and "
	      "must come from disk)", din, N / 2);
	unmap_region(r, N);
	return PASS;
}

/* ---------------------------------------------------------------- THP */

static void write_sys(const char *path, const char *val)
{
	FILE *f = fopen(path, "w");
	if (f) {
		fputs(val, f);
		fclose(f);
	}
}

int case_thp_move(void)
{
	const size_t NP = HPAGE / PAGE;
	const int A = g_node_a, B = g_node_b;
	if (!thp_available())
		return skip("transparent hugepages not available (no CONFIG_TRANSPARENT_HUGEPAGE or 'never')");
	/* A VMA of exactly one 2 MiB-aligned huge page. */
	char *res = mmap(NULL, 3 * HPAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED)
		return FAIL;
	char *r = (char *)(((unsigned long)res + HPAGE) & ~(HPAGE - 1));
	if (mmap(r, HPAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != r) {
		failf("mmap 2 MiB: %s, expected success", errname(errno));
		return FAIL;
	}
	CHECK(madvise(r, HPAGE, MADV_HUGEPAGE) == 0, "madvise(MADV_HUGEPAGE): %s, expected 0", errname(errno));
	long huge = 0;
	for (int t = 0; t < 2 && huge != 2048; t++) {
		if (t) { /* give the allocator a second chance: compact node memory */
			madvise(r, HPAGE, MADV_DONTNEED);
			drop_caches();
			write_sys("/proc/sys/vm/compact_memory", "1");
		}
		bind_task_to(A);
		fill_pattern(r, 0, NP, 81);
		bind_task_to(-1);
		huge = smaps_get_kb(0, (unsigned long)r, "AnonHugePages");
	}
	if (huge != 2048) {
		failf("could not get a huge page on node %d: AnonHugePages %ld kB after a MADV_HUGEPAGE fault, expected 2048", A, huge);
		return FAIL;
	}
	if (expect_on_node("precondition: the huge page on node A", 0, r, NP, A))
		return FAIL;

	for (int dir = 0; dir < 2; dir++) {
		int to = dir ? A : B;
		/* first pass: by the head page; second: by an address in the middle (tail page) */
		size_t idx = dir ? 300 : 0;
		long long t0 = vmstat_get("thp_migration_success"), sp0 = vmstat_get("thp_migration_split");
		long long s0 = vmstat_get("pgmigrate_success");
		void *p = r + idx * PAGE;
		int st = STATUS_UNSET;
		long ret = sys_move_pages(0, 1, &p, &to, &st, MPOL_MF_MOVE);
		char what[96];
		snprintf(what, sizeof(what), "THP moved to node %d via subpage %zu", to, idx);
		CHECK(ret == 0 && st == to, "%s: move_pages returned %ld (%s), status %s, expected 0 / node %d", what, ret,
		      errname(ret ? errno : 0), statusname(st), to);
		expect_on_node(what, 0, r, NP, to);
		expect_numa_maps(what, 0, r, to, NP);
		huge = smaps_get_kb(0, (unsigned long)r, "AnonHugePages");
		CHECK(huge == 2048, "%s: AnonHugePages %ld kB, expected 2048 (still one huge page)", what, huge);
		long long dt = vmstat_get("thp_migration_success") - t0, dsp = vmstat_get("thp_migration_split") - sp0;
		long long ds = vmstat_get("pgmigrate_success") - s0;
		diag("%s: thp_migration_success +%lld, thp_migration_split +%lld, pgmigrate_success +%lld", what, dt, dsp,
		     ds);
		CHECK(dt >= 1, "%s: thp_migration_success grew by %lld, expected >= 1", what, dt);
		CHECK(dsp == 0, "%s: thp_migration_split grew by %lld, expected 0", what, dsp);
		CHECK(ds >= (long long)NP, "%s: pgmigrate_success grew by %lld, expected >= %zu", what, ds, NP);
		check_pattern(what, r, 0, NP, 81);
	}
	munmap(res, 3 * HPAGE);
	return PASS;
}
