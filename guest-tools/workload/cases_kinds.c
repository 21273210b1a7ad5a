/* Cases: kinds_x_apis, kinds_short_target. Every kind of page the suite knows through
 * every migration API, checking what must not change (invisible.c); then again onto a
 * target node that is nearly full. The kinds and the APIs are tables; a failure line
 * names its cell ("shmem x mbind(MOVE|STRICT): ..."). */
#include "suite.h"

#include <fcntl.h>
#include <sys/mman.h>

/* ------------------------------------------------------------------ hugetlb, KSM */

long hugepages_node(int node, const char *file)
{
	char path[128];
	snprintf(path, sizeof(path), HUGE_SYSFS, node, file);
	return sysfs_long(path);
}

long hugepages_set(int node, long nr)
{
	char path[128];
	snprintf(path, sizeof(path), HUGE_SYSFS, node, "nr_hugepages");
	if (setting_write_long(path, nr))
		return -1;
	return sysfs_long(path);
}

void *hugetlb_pages_on(int node, size_t nhuge, uint64_t seed)
{
	long used = hugepages_node(node, "nr_hugepages") - hugepages_node(node, "free_hugepages");
	if (hugepages_set(node, used + (long)nhuge) < used + (long)nhuge)
		return NULL;
	char *p = mmap(NULL, nhuge * HPAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	bind_task_to(node);
	fill_pattern(p, 0, nhuge * HPAGE / PAGE, seed);
	bind_task_to(-1);
	return p;
}

#define KSM "/sys/kernel/mm/ksm/"

int ksm_start(void)
{
	if (access(KSM "run", W_OK))
		return -1;
	if (setting_write(KSM "pages_to_scan", "4096") || setting_write(KSM "sleep_millisecs", "5") ||
	    setting_write(KSM "run", "1"))
		return -1;
	return 0;
}

void ksm_scanning(int on)
{
	sysfs_write(KSM "run", on ? "1" : "0"); /* 0 stops ksmd and keeps merged pages merged */
}

int ksm_wait_scans(int scans)
{
	long s0 = sysfs_long(KSM "full_scans");
	for (double end = now_s() + 10; now_s() < end; usleep(5000))
		if (sysfs_long(KSM "full_scans") >= s0 + scans)
			return 0;
	return -1;
}

/* ------------------------------------------------------------------ page kinds */

struct region {
	char *base;
	size_t npages; /* 4 KiB pages mapped */
	size_t step;   /* pages per folio: 1, or 512 (THP, hugetlb) */
	size_t phys;   /* physical pages behind them (KSM: half) */
	long numa_unit; /* pages per numa_maps count: 512 for hugetlb (counted per huge page) */
	int flags;     /* MPOL_MF_MOVE, or MPOL_MF_MOVE_ALL for pages mapped twice (KSM) */
	int fd;
	char path[96];
	void *res; /* the reservation to unmap (THP) */
	size_t res_len;
	uint64_t seed;
};

struct kind {
	const char *name;
	int (*setup)(struct region *r, size_t units); /* pages on node A, filled; PASS, SKIP or FAIL */
	size_t matrix_units;                          /* folios (KSM: pairs) in kinds_x_apis */
	int writable;      /* the page can be written without changing its kind */
	int soft_dirty;    /* clear_refs 4 tracks it (not hugetlb) */
	int unreclaimable; /* the target cannot make room by reclaim: kinds_short_target */
};

static int setup_anon(struct region *r, size_t n)
{
	r->base = anon_pages_on(g_node_a, n, r->seed);
	return r->base ? PASS : FAIL;
}

static int setup_mlocked(struct region *r, size_t n)
{
	if (setup_anon(r, n))
		return FAIL;
	CHECK(mlock(r->base, n * PAGE) == 0, "mlock: %s, expected 0", errname(errno));
	return PASS;
}

static int setup_shmem(struct region *r, size_t n)
{
	r->base = map_region(n, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (!r->base)
		return FAIL;
	bind_task_to(g_node_a);
	fill_pattern(r->base, 0, n, r->seed);
	bind_task_to(-1);
	return PASS;
}

static int setup_ext4(struct region *r, size_t n)
{
	if (!fs_is("/mnt/scratch", EXT4_MAGIC_))
		return skip("/mnt/scratch is not ext4");
	snprintf(r->path, sizeof(r->path), "/mnt/scratch/kinds.%d.dat", (int)getpid());
	r->fd = open(r->path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	char *buf = malloc(n * PAGE);
	if (r->fd < 0 || !buf)
		return FAIL;
	fill_pattern(buf, 0, n, r->seed);
	bind_task_to(g_node_a); /* the page cache is allocated by the writer, under its policy */
	CHECK(pwrite(r->fd, buf, n * PAGE, 0) == (ssize_t)(n * PAGE), "pwrite: %s, expected all written", errname(errno));
	CHECK(fsync(r->fd) == 0, "fsync: %s, expected 0", errname(errno));
	bind_task_to(-1);
	free(buf);
	r->base = map_region(n, MAP_SHARED, r->fd, 0);
	if (!r->base)
		return FAIL;
	touch_read(r->base, n);
	return PASS;
}

static int setup_swapcache(struct region *r, size_t n)
{
	if (!swap_active())
		return skip("no active swap device");
	if (setup_anon(r, n) || !page_out_all(r->base, n))
		return FAIL;
	bind_task_to(g_node_a); /* swap-in allocates under the task's policy */
	touch_read(r->base, n);
	bind_task_to(-1);
	struct numa_line nl;
	numa_maps_get(0, (unsigned long)r->base, &nl);
	CHECK(nl.swapcache == (long)n, "swapcache kind: numa_maps swapcache=%ld after the swap-in, expected %zu",
	      nl.swapcache, n);
	return PASS;
}

static int setup_thp(struct region *r, size_t n)
{
	if (!thp_available())
		return skip("transparent hugepages not available");
	r->step = HPAGE / PAGE;
	r->res_len = (n + 1) * HPAGE;
	r->res = mmap(NULL, r->res_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r->res == MAP_FAILED)
		return FAIL;
	r->base = (char *)(((unsigned long)r->res + HPAGE - 1) & ~(HPAGE - 1));
	if (mmap(r->base, n * HPAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != r->base)
		return FAIL;
	madvise(r->base, n * HPAGE, MADV_HUGEPAGE);
	bind_task_to(g_node_a);
	fill_pattern(r->base, 0, n * r->step, r->seed);
	bind_task_to(-1);
	long kb = smaps_get_kb(0, (unsigned long)r->base, "AnonHugePages");
	CHECK(kb == (long)(n * 2048), "THP kind: AnonHugePages %ld kB after the fault, expected %zu", kb, n * 2048);
	return kb == (long)(n * 2048) ? PASS : FAIL;
}

static int setup_hugetlb(struct region *r, size_t n)
{
	if (hugepages_node(g_node_a, "nr_hugepages") < 0)
		return skip("no 2 MiB hugetlb pages (CONFIG_HUGETLBFS)");
	r->step = r->numa_unit = HPAGE / PAGE;
	r->base = hugetlb_pages_on(g_node_a, n, r->seed);
	if (!r->base)
		failf("hugetlb kind: could not get %zu huge pages on node %d: %s", n, g_node_a, errname(errno));
	return r->base ? PASS : FAIL;
}

/* KSM: n pairs, page i and page n + i hold the same data, merged by ksmd into one page. */
char *ksm_pairs_on(int node, size_t n, uint64_t seed)
{
	char *p = map_region(2 * n, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!p)
		return NULL;
	bind_task_to(node);
	fill_pattern(p, 0, n, seed);
	fill_pattern(p + n * PAGE, 0, n, seed);
	bind_task_to(-1);
	CHECK(madvise(p, 2 * n * PAGE, MADV_MERGEABLE) == 0, "madvise(MADV_MERGEABLE): %s", errname(errno));
	size_t merged = 0;
	for (int t = 0; t < 40 && merged < n; t++) {
		ksm_wait_scans(1);
		merged = ksm_pairs_merged(p, n);
	}
	CHECK(merged == n, "KSM: %zu of %zu pairs merged by ksmd, expected all", merged, n);
	return p;
}

size_t ksm_pairs_merged(char *p, size_t n)
{
	struct facts f;
	if (facts_take(&f, p, 2 * n))
		return 0;
	size_t merged = 0;
	for (size_t i = 0; i < n; i++)
		merged += facts_ksm(&f, i) && facts_pfn(&f, i) == facts_pfn(&f, n + i);
	facts_free(&f);
	return merged;
}

static int setup_ksm(struct region *r, size_t n)
{
	if (ksm_start())
		return skip("no KSM (/sys/kernel/mm/ksm/run)");
	r->npages = 2 * n;
	r->phys = n;
	r->flags = MPOL_MF_MOVE_ALL;
	int f0 = g_failures;
	r->base = ksm_pairs_on(g_node_a, n, r->seed);
	/* ksmd holds a reference on the page it is looking at: a migration meeting it fails
	 * (unexpected refcount, after its retries). Stop it while the pages move. */
	ksm_scanning(0);
	return r->base && g_failures == f0 ? PASS : FAIL;
}

static const struct kind kinds[] = {
	{ "anon", setup_anon, 64, 1, 1, 0 },
	{ "mlocked", setup_mlocked, 64, 1, 1, 1 },
	{ "shmem", setup_shmem, 64, 1, 1, 0 },
	{ "ext4", setup_ext4, 64, 1, 1, 0 },
	{ "swapcache", setup_swapcache, 64, 0, 1, 0 },
	{ "thp", setup_thp, 1, 1, 1, 0 },
	{ "hugetlb", setup_hugetlb, 1, 1, 0, 1 },
	{ "ksm", setup_ksm, 32, 0, 1, 0 },
};
#define NKINDS ((int)(sizeof(kinds) / sizeof(kinds[0])))

static int region_setup(const struct kind *k, struct region *r, size_t units, uint64_t seed)
{
	*r = (struct region){ .step = 1, .numa_unit = 1, .flags = MPOL_MF_MOVE, .fd = -1, .seed = seed };
	int v = k->setup(r, units);
	if (!r->npages)
		r->npages = units * r->step;
	if (!r->phys)
		r->phys = r->npages;
	return v;
}

static void region_teardown(struct region *r)
{
	if (r->res)
		munmap(r->res, r->res_len);
	else if (r->step > 1 && r->base)
		munmap(r->base, r->npages * PAGE); /* hugetlb */
	else
		unmap_region(r->base, r->npages);
	if (r->fd >= 0) {
		close(r->fd);
		unlink(r->path);
	}
}

static long region_check(const char *what, const struct region *r)
{
	if (r->phys < r->npages) /* KSM: both halves hold the first half's data */
		return check_pattern(what, r->base, 0, r->phys, r->seed) +
		       check_pattern(what, r->base + r->phys * PAGE, 0, r->phys, r->seed);
	return check_pattern(what, r->base, 0, r->npages, r->seed);
}

/* Soft-dirty, young and pte write protection made to differ between pages: after
 * clear_refs 4 (soft-dirty cleared, ptes write-protected) even pages are written (the
 * same word back: data unchanged); after clear_refs 1 (referenced/young cleared) odd
 * pages are read. Migration must carry all of it (checked by facts_expect_same). */
static void vary_page_state(const struct region *r, int writable)
{
	sysfs_write("/proc/self/clear_refs", "4");
	for (size_t i = 0; writable && i < r->npages; i += 2) {
		volatile uint64_t *w = (volatile uint64_t *)(r->base + i * PAGE);
		*w = *w;
	}
	sysfs_write("/proc/self/clear_refs", "1");
	touch_read(r->base + PAGE, 1);
	for (size_t i = 1; i < r->npages; i += 2)
		(void)*(volatile char *)(r->base + i * PAGE);
}

/* ------------------------------------------------------------------ the APIs */

enum api { API_MOVE_PAGES, API_MIGRATE_PAGES, API_MBIND, API_MBIND_STRICT, NAPIS };
static const char *const api_names[NAPIS] = { "move_pages", "migrate_pages", "mbind(MOVE)", "mbind(MOVE|STRICT)" };
static const char *const api_reason[NAPIS] = { REASON_SYSCALL, REASON_SYSCALL, REASON_MBIND, REASON_MBIND };

/* move_pages' arrays for the region's folios (KSM: each page by its first address only). */
struct move_args {
	size_t nf;
	void **pages;
	int *nodes, *status;
};

static struct move_args move_args_new(const struct region *r, int to)
{
	struct move_args m = { .nf = r->phys / r->step };
	m.pages = calloc(m.nf, sizeof(void *));
	m.nodes = calloc(m.nf, sizeof(int));
	m.status = calloc(m.nf, sizeof(int));
	for (size_t i = 0; i < m.nf; i++) {
		m.pages[i] = r->base + i * r->step * PAGE;
		m.nodes[i] = to;
		m.status[i] = STATUS_UNSET;
	}
	return m;
}

static void move_args_free(struct move_args *m)
{
	free(m->pages);
	free(m->nodes);
	free(m->status);
}

/* One call of the API moving the region from `from` to `to` (move_pages: statuses in
 * m->status). Allocates nothing (see facts_settle()). Returns the call's result, errno kept. */
static long api_move(enum api a, const struct region *r, int from, int to, struct move_args *m)
{
	unsigned long old[2], new_[2];
	nodemask_of(old, from);
	nodemask_of(new_, to);
	switch (a) {
	case API_MOVE_PAGES:
		return sys_move_pages(0, m->nf, m->pages, m->nodes, m->status, r->flags);
	case API_MIGRATE_PAGES:
		return sys_migrate_pages(0, MAXNODE, old, new_);
	case API_MBIND:
	case API_MBIND_STRICT:
		return sys_mbind(r->base, r->npages * PAGE, MPOL_BIND, new_, MAXNODE,
		                 r->flags | (a == API_MBIND_STRICT ? MPOL_MF_STRICT : 0));
	default:
		return -1;
	}
}

/* Pages of the region on node `node` now (query), and physical pages among them. */
static size_t pages_on(const struct region *r, int node, size_t *phys)
{
	int *st = malloc(r->npages * sizeof(int));
	query_pages(0, r->base, r->npages, st);
	size_t n = 0, p = 0;
	for (size_t i = 0; i < r->npages; i++) {
		n += st[i] == node;
		p += st[i] == node && i < r->phys; /* KSM: count the first half only */
	}
	free(st);
	*phys = p;
	return n;
}

/* KSM pages moved by mbind(2) before 6.7 get their new page from the task's policy, not
 * the VMA's: new_page() looks for the page's address with page_address_in_vma(), which
 * fails for a KSM page (no anon_vma of its own), and allocates with vma == NULL. The page
 * is migrated (the trace counts it) onto the node the task allocates from. */
static int ksm_mbind_stays(enum api a, const struct region *r)
{
	return (a == API_MBIND || a == API_MBIND_STRICT) && r->phys < r->npages && !kernel_at_least(6, 7);
}

/* Pages of this process on node (all of /proc/self/numa_maps; hugetlb: huge pages). */
static long process_pages_on(int node)
{
	FILE *f = fopen("/proc/self/numa_maps", "re");
	char tok[64], key[16];
	long n = 0;
	snprintf(key, sizeof(key), "N%d=", node);
	while (f && fscanf(f, "%63s", tok) == 1)
		if (!strncmp(tok, key, strlen(key)))
			n += strtol(tok + strlen(key), NULL, 10);
	if (f)
		fclose(f);
	return n;
}

static void expect_api_success(const char *what, enum api a, const struct region *r, int from, int to)
{
	struct move_args m = move_args_new(r, to);
	size_t nf = m.nf;
	int *st = m.status, *exp = malloc(nf * sizeof(int));
	struct facts before, after;
	int have_facts = facts_take(&before, r->base, r->npages) == 0;
	struct trace_mark t0 = trace_mark(api_reason[a]);
	int dest = to;
	if (ksm_mbind_stays(a, r)) {
		run_on_node_cpus(from); /* the task allocates on `from`: the page stays there */
		to = from;
	}
	long status0[NSTATUS], status1[NSTATUS];
	facts_status(status0);
	long ret = api_move(a, r, from, dest, &m);
	int e = ret < 0 ? errno : 0;
	facts_status(status1);
	run_on_node_cpus(-1);
	/* KSM: each page is mapped twice in the range; mbind(2) isolates it at the first
	 * address, and with MPOL_MF_STRICT the second address, whose page is already isolated,
	 * gives EIO (6.1 migrate_folio_add()); the page moves all the same. From 6.7 on
	 * migrate_pages(2) counts that second address too: queue_folios_pte_range() adds one
	 * to nr_failed for each folio migrate_folio_add() cannot isolate, and migrate_to_node()
	 * returns it with the pages migrate_pages() left (6.12 mm/mempolicy.c): one "page not
	 * moved" per pair, though every page moved. */
	int want = a == API_MBIND_STRICT && r->phys < r->npages ? EIO : 0;
	long want_ret = want ? -1 : 0, unmoved = 0;
	if (a == API_MIGRATE_PAGES && kernel_at_least(6, 7)) {
		/* migrate_pages(2) covers the whole process, and from 6.7 its answer counts each
		 * folio of it that migrate_folio_add() could not isolate, even for a moment ("there
		 * may be temporary off LRU folios", 6.12 mm/mempolicy.c): any such page is still
		 * on `from`, so the excess is bounded by the process's pages left there. */
		want_ret = (long)(r->npages - r->phys);
		unmoved = process_pages_on(from);
	}
	CHECK(ret >= want_ret && ret <= want_ret + unmoved && e == want, "%s: returned %ld (%s), expected %ld (%s)%s",
	      what, ret, errname(e), want_ret, errname(want),
	      unmoved ? " plus at most the process's pages still on the source node" : "");
	if (ret > want_ret)
		diag("%s: returned %ld: %ld pages not isolated (the process has %ld pages on node %d)", what, ret,
		     ret - want_ret, unmoved, from);
	int have_after = have_facts && facts_take(&after, r->base, r->npages) == 0;
	if (a == API_MOVE_PAGES) {
		for (size_t i = 0; i < nf; i++)
			exp[i] = to;
		check_status_array(what, st, exp, nf);
	}
	expect_on_node(what, 0, r->base, r->npages, to);
	expect_numa_maps(what, 0, r->base, to, (long)r->npages / r->numa_unit);
	region_check(what, r);
	/* migrate_pages(2) moves every page of the process on `from`, not only the region's */
	expect_trace(what, api_reason[a], t0, (long)r->phys, a == API_MIGRATE_PAGES ? 1L << 40 : (long)r->phys, 0);
	if (have_after) {
		memcpy(before.status, status0, sizeof(status0));
		memcpy(after.status, status1, sizeof(status1));
		facts_expect_same(what, &before, &after, from, to);
		facts_free(&after);
	}
	if (have_facts)
		facts_free(&before);
	move_args_free(&m);
	free(exp);
}

/* -------------------------------------------------------------- kinds_x_apis */

int case_kinds_x_apis(void)
{
	const int A = g_node_a, B = g_node_b;
	int cells = 0, skipped = 0;
	facts_settle();
	for (int k = 0; k < NKINDS; k++) {
		struct region r;
		double t0 = now_s();
		int v = region_setup(&kinds[k], &r, kinds[k].matrix_units, 900 + k);
		if (v != PASS) {
			diag("%s: %s", kinds[k].name, v == SKIP ? g_skip_reason : "setup failed");
			skipped += v == SKIP;
			region_teardown(&r);
			continue;
		}
		vary_page_state(&r, kinds[k].writable);
		/* Alternate directions: A -> B, B -> A, ... from where the pages are. */
		for (int a = 0; a < NAPIS; a++) {
			char what[96];
			int st0 = STATUS_UNSET;
			query_pages(0, r.base, 1, &st0);
			int from = st0 == B ? B : A, to = from == A ? B : A;
			snprintf(what, sizeof(what), "%s x %s (node %d -> %d)", kinds[k].name, api_names[a], from, to);
			expect_api_success(what, a, &r, from, to);
			cells++;
		}
		if (kinds[k].writable && kinds[k].soft_dirty) {
			/* The pte of a page not written since clear_refs 4 is still write-protected after
			 * the migrations: writing it faults, which sets soft-dirty again. */
			struct facts f;
			volatile uint64_t *w = (volatile uint64_t *)(r.base + PAGE);
			*w = *w;
			if (facts_take(&f, r.base, 2) == 0) {
				CHECK(facts_soft_dirty(&f, 1), "%s: page 1 written after the migrations is not soft-dirty: its "
				      "pte was writable, expected the write protection from clear_refs kept", kinds[k].name);
				facts_free(&f);
			}
		}
		region_teardown(&r);
		diag("%s: %d APIs, %.2f s", kinds[k].name, NAPIS, now_s() - t0);
	}
	diag("%d cells checked, %d kinds skipped", cells, skipped);
	return cells ? PASS : skip("no page kind available");
}

/* ---------------------------------------------------------- kinds_short_target */

/* Fill `node` with free hugetlb pool pages (they cannot be reclaimed, moved or used for
 * anything else), all reserved by a mapping of this process so that no migration can take
 * one, and give back `margin_huge` of them to the buddy allocator. Returns the reservation
 * (NULL on failure) and its length. */
static void *fill_node(int node, long margin_huge, size_t *len)
{
	long nr0 = hugepages_node(node, "nr_hugepages"), free_kb = node_free_kb(node);
	long got = hugepages_set(node, nr0 + free_kb / 2048 + 8); /* as many as the node can give */
	hugepages_set(node, got - margin_huge);
	long fr = 0;
	for (int n = 0; n < MASK_BITS; n++) {
		long f = hugepages_node(n, "free_hugepages");
		fr += f > 0 ? f : 0;
	}
	*len = (size_t)fr * HPAGE;
	void *p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	diag("node %d filled: %ld huge pages added to its pool, %ld given back, %ld free huge pages reserved; "
	     "MemFree %ld kB -> %ld kB", node, got - nr0, margin_huge, fr, free_kb, node_free_kb(node));
	if (p == MAP_FAILED) {
		failf("reserving the %ld free huge pages: %s, expected success", fr, errname(errno));
		return NULL;
	}
	return p;
}

/* The documented answer of each API when the target cannot take all pages (6.1:
 * migrate_pages() stops at the first allocation failure and returns -ENOMEM; move_pages()
 * and migrate_pages(2) return it, leaving the batch's statuses unwritten; mbind(2) counts
 * it as a failure: EIO with MPOL_MF_STRICT, 0 without). */
static void expect_api_short(const char *what, enum api a, const struct region *r, int from, int to)
{
	struct move_args m = move_args_new(r, to);
	size_t nf = m.nf, moved_phys;
	int *st = m.status;
	struct isolated iso0 = isolated_now();
	long long f0 = vmstat_get("pgmigrate_fail");
	struct trace_mark t0 = trace_mark(api_reason[a]);
	long ret = api_move(a, r, from, to, &m);
	int e = ret ? errno : 0;
	int want_err = a == API_MBIND ? 0 : a == API_MBIND_STRICT ? EIO : ENOMEM;
	CHECK(ret == (want_err ? -1 : 0) && e == want_err, "%s: returned %ld (%s), expected %s", what, ret, errname(e),
	      want_err ? errname(want_err) : "0");
	if (a == API_MOVE_PAGES) {
		long unset = 0;
		for (size_t i = 0; i < nf; i++)
			unset += st[i] == STATUS_UNSET;
		CHECK(unset == (long)nf, "%s: %ld of %zu statuses written, expected none (the failed batch's)", what,
		      (long)nf - unset, nf);
	}
	size_t on_to = pages_on(r, to, &moved_phys), on_from = pages_on(r, from, &(size_t){ 0 });
	diag("%s: %zu of %zu pages moved", what, on_to, r->npages);
	CHECK(on_to + on_from == r->npages, "%s: %zu pages on node %d and %zu on node %d, expected all %zu on one of them",
	      what, on_to, to, on_from, from, r->npages);
	CHECK(on_to < r->npages, "%s: all %zu pages moved to the full node, expected the allocation to fail", what,
	      r->npages);
	struct numa_line nl;
	numa_maps_get(0, (unsigned long)r->base, &nl);
	CHECK(nl.total == nl.n[from] + nl.n[to], "%s: numa_maps counts %ld pages off nodes %d and %d, expected none",
	      what, nl.total - nl.n[from] - nl.n[to], from, to);
	long s, fl;
	if (trace_count(api_reason[a], &s, &fl) >= 0) {
		s -= t0.succeeded;
		fl -= t0.failed;
		CHECK(a == API_MIGRATE_PAGES ? s >= (long)moved_phys : s == (long)moved_phys,
		      "%s: the trace events say %ld pages succeeded, expected the %zu that are on node %d now", what, s,
		      moved_phys, to);
		CHECK(fl >= 1, "%s: the trace events say %ld pages failed, expected >= 1", what, fl);
	}
	CHECK(vmstat_get("pgmigrate_fail") > f0, "%s: pgmigrate_fail did not grow, expected the failure counted", what);
	region_check(what, r);
	expect_isolated_back(what, iso0);
	move_args_free(&m);
}

int case_kinds_short_target(void)
{
	const int A = g_node_a, B = g_node_b;
	if (hugepages_node(B, "nr_hugepages") < 0)
		return skip("no 2 MiB hugetlb pages to fill the target node with (CONFIG_HUGETLBFS)");
	if (node_has_movable_zone(B)) /* hugetlb pages never come from ZONE_MOVABLE: it stays free */
		return skip("needs: node %d without ZONE_MOVABLE (hugetlb pages cannot fill it)", B);
	size_t len;
	drop_caches(); /* page cache on B would be reclaimed to make room: the fill takes it now */
	few_pcp_pages(); /* else node B drains thousands of free pages from them when "full" */
	void *filler = fill_node(B, 1, &len);
	if (!filler)
		return FAIL;
	/* What the huge fill could not take (free memory in blocks under 2 MiB, beside the
	 * slab pages earlier cases left on B) varies from boot to boot: 7498 pages were left
	 * once, and all of 2048 pages moved. Move 8 MiB more than B has free; and more huge
	 * pages than compaction could make 2 MiB blocks of from it (4 of 4 moved once). */
	long left = node_free_kb(B) / 4;
	size_t small_units = (size_t)(left > 0 ? left : 0) + 2048, huge_units = small_units / (HPAGE / PAGE);
	int cells = 0;
	for (int k = 0; k < NKINDS; k++) {
		/* Pages node B cannot reclaim to make room (with swap, the others get room by
		 * reclaim on B: see the README). */
		if (!kinds[k].unreclaimable)
			continue;
		size_t units = strcmp(kinds[k].name, "hugetlb") ? small_units : huge_units;
		struct region r;
		double t0 = now_s();
		int v = region_setup(&kinds[k], &r, units, 950 + k);
		if (v != PASS) {
			diag("%s: %s", kinds[k].name, v == SKIP ? g_skip_reason : "setup failed");
			region_teardown(&r);
			continue;
		}
		for (int a = 0; a < NAPIS; a++) {
			char what[128];
			snprintf(what, sizeof(what), "%s x %s, target node %d short of memory", kinds[k].name, api_names[a], B);
			expect_api_short(what, a, &r, A, B);
			cells++;
			/* Back to A for the next API (A has room). */
			struct move_args back = move_args_new(&r, A);
			api_move(API_MOVE_PAGES, &r, B, A, &back);
			move_args_free(&back);
			size_t x;
			CHECK(pages_on(&r, A, &x) == r.npages, "%s: pages not all back on node %d after moving them back", what, A);
		}
		region_teardown(&r);
		diag("%s: %zu units, %d APIs, %.2f s", kinds[k].name, units, NAPIS, now_s() - t0);
	}
	munmap(filler, len);
	return cells ? PASS : skip("no page kind available");
}
