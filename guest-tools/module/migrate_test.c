// SPDX-License-Identifier: GPL-2.0
/*
 * migrate_test - drive migrate_pages() directly from a module and report
 * the results as KTAP v1 (the KUnit layout) in the kernel log.
 *
 * migrate_pages(), folio_isolate_lru(), putback_movable_pages(),
 * lru_add_drain_all() and do_madvise() are not exported to modules: they
 * are looked up with kallsyms_lookup_name(), itself found with a kprobe,
 * and called through pointers whose types come from the kernel's own
 * declarations (typeof), so a signature change is a build error, not a
 * wrong call.  See README.md for the reasons and the cost.
 *
 * All cases run from module init, in the context of the insmod process.
 * Each case undoes what it did (isolation, references, CPU affinity,
 * mappings) before the next one starts, also when it fails; module exit
 * has nothing left to free.
 */
#define pr_fmt(fmt) fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/version.h>
#include <linux/kprobes.h>
#include <linux/kallsyms.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/mm_inline.h>
#include <linux/migrate.h>
#include <linux/shmem_fs.h>
#include <linux/pagemap.h>
#include <linux/highmem.h>
#include <linux/swap.h>
#include <linux/vmstat.h>
#include <linux/cpumask.h>
#include <linux/nodemask.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/delay.h>
#include <linux/uaccess.h>
#include <linux/file.h>
#include <linux/err.h>
#ifdef CONFIG_X86_KERNEL_IBT
#include <asm/cpufeature.h>
#endif

#ifndef CONFIG_MIGRATION
#error "migrate_test needs CONFIG_MIGRATION=y"
#endif
#ifndef CONFIG_NUMA
#error "migrate_test needs CONFIG_NUMA=y"
#endif

/*
 * Kernel API differences between 6.1 and 6.12.  The Kbuild file probes
 * the kernel headers and passes -DMT_API_...=0/1, which is exact on every
 * commit (a bisect also walks merge-window commits whose version number
 * is still the previous release's).  Without a probe the version number
 * decides.  A wrong choice fails the build (the pointer types come from
 * the kernel's declarations), it cannot produce a wrong call.
 */
#ifndef MT_API_FOLIO_CB		/* new_folio_t/free_folio_t callbacks (6.5) */
#define MT_API_FOLIO_CB (LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0))
#endif
#ifndef MT_API_ISOLATE_BOOL	/* bool folio_isolate_lru() (6.4) */
#define MT_API_ISOLATE_BOOL (LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0))
#endif
#ifndef MT_API_FOLIO_SWAP	/* folio->swap instead of folio_swap_entry() (6.6) */
#define MT_API_FOLIO_SWAP (LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0))
#endif

#define MT_SUITE	"migrate_pages"
#define MT_SRC_NID	0
#define MT_DST_NID	1
#define MT_MAX		32	/* pages per case */
#define MT_HELD		3	/* index of the folio held with an extra reference */

/* ------------------------------------------------------------------ */
/* Unexported kernel functions                                         */

static unsigned long (*mt_lookup)(const char *name);
static typeof(migrate_pages) *mt_migrate_pages;
static typeof(putback_movable_pages) *mt_putback_movable_pages;
static typeof(lru_add_drain_all) *mt_lru_add_drain_all;
static typeof(do_madvise) *mt_do_madvise;	/* optional: swap case only */
#if MT_API_ISOLATE_BOOL
typedef bool mt_isolate_fn(struct folio *folio);
#else
typedef int mt_isolate_fn(struct folio *folio);
#endif
static mt_isolate_fn *mt_folio_isolate_lru;	/* declared in mm/internal.h */

static char mt_setup_error[160];	/* why no case can run, or "" */

#define mt_log(fmt, ...)	pr_info(fmt "\n", ##__VA_ARGS__)

static int mt_resolve_kallsyms(void)
{
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	int ret;

	ret = register_kprobe(&kp);
	if (ret < 0)
		return ret;
	mt_lookup = (void *)kp.addr;
	unregister_kprobe(&kp);
	return mt_lookup ? 0 : -ENOENT;
}

static unsigned long mt_sym(const char *name, bool required)
{
	unsigned long addr = mt_lookup(name);

	if (!addr) {
		mt_log("    # migrate_test: symbol %s not found by kallsyms_lookup_name()%s",
		       name, required ? "" : " (optional)");
		if (required && !mt_setup_error[0])
			snprintf(mt_setup_error, sizeof(mt_setup_error),
				 "unexported symbol %s could not be resolved", name);
	}
	return addr;
}

static int mt_resolve(void)
{
	int ret;

#ifdef CONFIG_X86_KERNEL_IBT
	if (cpu_feature_enabled(X86_FEATURE_IBT)) {
		snprintf(mt_setup_error, sizeof(mt_setup_error),
			 "IBT is enforced: indirect calls to unexported functions may trap (boot with ibt=off)");
		mt_log("    # migrate_test: %s", mt_setup_error);
		return -EOPNOTSUPP;
	}
#endif
	ret = mt_resolve_kallsyms();
	if (ret) {
		snprintf(mt_setup_error, sizeof(mt_setup_error),
			 "kallsyms_lookup_name not found with a kprobe (register_kprobe: %d); needs CONFIG_KPROBES=y and CONFIG_KALLSYMS=y",
			 ret);
		mt_log("    # migrate_test: %s", mt_setup_error);
		return -EOPNOTSUPP;
	}
	mt_migrate_pages = (typeof(mt_migrate_pages))mt_sym("migrate_pages", true);
	mt_putback_movable_pages =
		(typeof(mt_putback_movable_pages))mt_sym("putback_movable_pages", true);
	mt_folio_isolate_lru = (mt_isolate_fn *)mt_sym("folio_isolate_lru", true);
	mt_lru_add_drain_all = (typeof(mt_lru_add_drain_all))mt_sym("lru_add_drain_all", true);
	mt_do_madvise = (typeof(mt_do_madvise))mt_sym("do_madvise", false);
	return mt_setup_error[0] ? -EOPNOTSUPP : 0;
}

static bool mt_isolate_lru(struct folio *folio)
{
#if MT_API_ISOLATE_BOOL
	return mt_folio_isolate_lru(folio);
#else
	return mt_folio_isolate_lru(folio) == 0;
#endif
}

#ifdef CONFIG_SWAP
static unsigned long mt_swap_val(struct folio *folio)
{
#if MT_API_FOLIO_SWAP
	return folio->swap.val;
#else
	return folio_swap_entry(folio).val;
#endif
}
#endif

/* ------------------------------------------------------------------ */
/* KTAP reporting                                                      */

struct mt_case {
	const char *name;
	unsigned int num;
	bool failed;
	bool skipped;
	unsigned int nfail;	/* failed checks; the first MT_MAX_DIAG are shown */
	char skip_reason[160];
};

#define MT_MAX_DIAG 12

#define mt_diag(c, fmt, ...) \
	mt_log("    # %s: " fmt, (c)->name, ##__VA_ARGS__)
#define mt_fail(c, fmt, ...) \
	do { \
		(c)->failed = true; \
		if (++(c)->nfail <= MT_MAX_DIAG) \
			mt_diag(c, fmt, ##__VA_ARGS__); \
	} while (0)
#define mt_skip(c, fmt, ...) \
	do { \
		(c)->skipped = true; \
		snprintf((c)->skip_reason, sizeof((c)->skip_reason), \
			 fmt, ##__VA_ARGS__); \
	} while (0)
/* "what: expected E, seen S" */
#define mt_expect_eq(c, what, seen, expected) \
	do { \
		long long __s = (seen), __e = (expected); \
		if (__s != __e) \
			mt_fail(c, "%s: expected %lld, seen %lld", what, __e, __s); \
	} while (0)

/* ------------------------------------------------------------------ */
/* Node counters: NR_ISOLATED_{ANON,FILE} on nodes 0 and 1             */

struct mt_iso {
	long v[2][2];	/* [node][0 = anon, 1 = file] */
};

/*
 * Exact value of a node counter: the node's atomic plus every CPU's
 * not yet folded delta (node_page_state() reads only the former, which
 * lags by up to the per-CPU threshold).
 */
static long mt_node_stat(int nid, enum node_stat_item item)
{
	struct pglist_data *pgdat = NODE_DATA(nid);
	long x = atomic_long_read(&pgdat->vm_stat[item]);
	int cpu;

	for_each_possible_cpu(cpu)
		x += READ_ONCE(per_cpu_ptr(pgdat->per_cpu_nodestats, cpu)->vm_node_stat_diff[item]);
	return x;
}

static void mt_iso_read(struct mt_iso *s)
{
	int n, f;

	for (n = 0; n < 2; n++)
		for (f = 0; f < 2; f++)
			s->v[n][f] = mt_node_stat(n, NR_ISOLATED_ANON + f);
}

/* A baseline that two reads 10 ms apart agree on. */
static void mt_iso_base(struct mt_iso *s)
{
	struct mt_iso again;
	int i;

	mt_iso_read(s);
	for (i = 0; i < 20; i++) {
		msleep(10);
		mt_iso_read(&again);
		if (!memcmp(s, &again, sizeof(again)))
			return;
		*s = again;
	}
}

/*
 * Check the counters against @want; other kernel activity can isolate
 * pages for a moment, so a mismatch is retried for up to a second.
 */
static void mt_iso_expect(struct mt_case *c, const struct mt_iso *want,
			  const char *when)
{
	static const char * const item[] = { "NR_ISOLATED_ANON", "NR_ISOLATED_FILE" };
	struct mt_iso seen;
	int i, n, f;

	for (i = 0; i < 100; i++) {
		mt_iso_read(&seen);
		if (!memcmp(want, &seen, sizeof(seen)))
			return;
		msleep(10);
	}
	for (n = 0; n < 2; n++)
		for (f = 0; f < 2; f++)
			if (want->v[n][f] != seen.v[n][f])
				mt_fail(c, "%s of node %d %s: expected %ld, seen %ld",
					item[f], n, when, want->v[n][f], seen.v[n][f]);
}

/* ------------------------------------------------------------------ */
/* CPU affinity: allocate on node 0 by running on a node-0 CPU         */

struct mt_pin {
	cpumask_var_t saved;
	bool active;
};

static int mt_pin_to_node(struct mt_pin *p, int nid)
{
	int ret;

	if (!alloc_cpumask_var(&p->saved, GFP_KERNEL))
		return -ENOMEM;
	cpumask_copy(p->saved, current->cpus_ptr);
	ret = set_cpus_allowed_ptr(current, cpumask_of_node(nid));
	if (ret) {
		free_cpumask_var(p->saved);
		return ret;
	}
	p->active = true;
	return 0;
}

static void mt_unpin(struct mt_pin *p)
{
	if (!p->active)
		return;
	set_cpus_allowed_ptr(current, p->saved);
	free_cpumask_var(p->saved);
	p->active = false;
}

/* ------------------------------------------------------------------ */
/* Page contents                                                       */

static u64 mt_word(u32 seed, unsigned int idx, unsigned int w)
{
	return ((u64)seed << 32) ^ ((u64)idx << 20) ^ w ^ 0xa5a5000000000000ULL;
}

static void mt_pattern(u64 *buf, u32 seed, unsigned int idx)
{
	unsigned int w;

	for (w = 0; w < PAGE_SIZE / sizeof(u64); w++)
		buf[w] = mt_word(seed, idx, w);
}

/* Compare @p with the pattern (or zeroes); report the first difference. */
static void mt_check_words(struct mt_case *c, const u64 *p, bool filled,
			   u32 seed, unsigned int idx, const char *via)
{
	unsigned int w;

	for (w = 0; w < PAGE_SIZE / sizeof(u64); w++) {
		u64 want = filled ? mt_word(seed, idx, w) : 0;

		if (p[w] != want) {
			mt_fail(c, "index %u: contents (%s) differ at byte %zu: expected %#llx, seen %#llx",
				idx, via, w * sizeof(u64), want, p[w]);
			return;
		}
	}
}

static void mt_check_page(struct mt_case *c, struct page *page, bool filled,
			  u32 seed, unsigned int idx)
{
	u64 *p = kmap_local_page(page);

	mt_check_words(c, p, filled, seed, idx, "kernel map");
	kunmap_local(p);
}

/* ------------------------------------------------------------------ */
/* The fixture: MT_MAX order-0 folios, from shmem or anonymous memory  */

struct mt_fix {
	struct mt_case *c;
	unsigned int nr;
	u32 seed;
	struct file *file;		/* shmem */
	struct address_space *mapping;
	unsigned long uaddr;		/* anonymous memory of this process */
	size_t ulen;

	struct page *ref[MT_MAX];	/* our reference, NULL when not held */
	struct folio *folio[MT_MAX];	/* identity at setup (compared only) */
	unsigned long pfn[MT_MAX];
	bool filled[MT_MAX];
	bool dirty[MT_MAX];
	int refcount[MT_MAX];		/* at setup, including our reference */
	int lru_item[MT_MAX];		/* 0 = anon LRU, 1 = file LRU */
	unsigned long swap[MT_MAX];
	struct list_head list;		/* isolated folios */
	struct mt_iso base;		/* counters before isolation */
};

static struct mt_fix *mt_fix_alloc(struct mt_case *c)
{
	struct mt_fix *f = kzalloc(sizeof(*f), GFP_KERNEL);

	if (!f) {
		mt_fail(c, "setup: out of memory");
		return NULL;
	}
	f->c = c;
	f->seed = 0x4d540000u + c->num;
	INIT_LIST_HEAD(&f->list);
	return f;
}

static bool mt_fix_owns(struct mt_fix *f, struct folio *folio)
{
	unsigned int i;

	for (i = 0; i < f->nr; i++)
		if (f->folio[i] == folio)
			return true;
	return false;
}

static void mt_drop_ref(struct mt_fix *f, unsigned int i)
{
	if (f->ref[i]) {
		put_page(f->ref[i]);
		f->ref[i] = NULL;
	}
}

/*
 * Record the state of every folio (we hold a reference on each). SKIP
 * when a folio is large or did not land on node 0.
 */
static bool mt_record(struct mt_fix *f)
{
	struct mt_case *c = f->c;
	unsigned int i, round;

	mt_lru_add_drain_all();	/* no per-CPU batch holds a reference */
	for (i = 0; i < f->nr; i++) {
		struct folio *folio = page_folio(f->ref[i]);

		if (folio_test_large(folio)) {
			mt_skip(c, "index %u is a large folio (order %u); this module migrates order-0 folios only",
				i, folio_order(folio));
			return false;
		}
		if (folio_nid(folio) != MT_SRC_NID) {
			mt_skip(c, "index %u was allocated on node %d, not node %d",
				i, folio_nid(folio), MT_SRC_NID);
			return false;
		}
		f->folio[i] = folio;
		f->pfn[i] = folio_pfn(folio);
		f->dirty[i] = folio_test_dirty(folio);
		f->refcount[i] = folio_ref_count(folio);
		f->lru_item[i] = folio_is_file_lru(folio);
	}
	/* a reference someone held for a moment must not become the norm */
	for (round = 0; round < 2; round++) {
		msleep(1);
		mt_lru_add_drain_all();
		for (i = 0; i < f->nr; i++)
			f->refcount[i] = min(f->refcount[i], folio_ref_count(f->folio[i]));
	}
	return true;
}

/* Isolate every folio from its LRU, accounted like the syscalls do. */
static bool mt_isolate_all(struct mt_fix *f)
{
	struct mt_case *c = f->c;
	unsigned int i;

	mt_iso_base(&f->base);
	for (i = 0; i < f->nr; i++) {
		struct folio *folio = f->folio[i];

		if (!mt_isolate_lru(folio)) {
			mt_lru_add_drain_all();
			if (!mt_isolate_lru(folio)) {
				mt_fail(c, "setup: cannot isolate index %u from the LRU (lru=%d, refcount %d)",
					i, folio_test_lru(folio), folio_ref_count(folio));
				return false;
			}
		}
		mod_node_page_state(folio_pgdat(folio),
				    NR_ISOLATED_ANON + folio_is_file_lru(folio),
				    folio_nr_pages(folio));
		list_add_tail(&folio->lru, &f->list);
	}
	return true;
}

/* Expected counters while the folios in @mask are still isolated. */
static void mt_iso_with(const struct mt_fix *f, unsigned long mask,
			struct mt_iso *want)
{
	unsigned int i;

	*want = f->base;
	for (i = 0; i < f->nr; i++)
		if (mask & BIT(i))
			want->v[MT_SRC_NID][f->lru_item[i]]++;
}

/* Put back what is still isolated, release references and memory. */
static void mt_fix_free(struct mt_fix *f)
{
	struct mt_case *c = f->c;
	bool leftovers = !list_empty(&f->list);
	unsigned int i;

	if (leftovers)
		mt_putback_movable_pages(&f->list);
	mt_lru_add_drain_all();
	for (i = 0; i < f->nr; i++)
		mt_drop_ref(f, i);
	if (leftovers)	/* only on a path that gave up early */
		mt_iso_expect(c, &f->base, "after cleanup");
	if (f->file)
		fput(f->file);
	if (f->uaddr)
		vm_munmap(f->uaddr, f->ulen);
	kfree(f);
}

/* ------------------------------------------------------------------ */
/* Allocation callbacks                                                */

struct mt_alloc {
	struct mt_fix *f;
	int nid;
	bool fail;		/* return NULL */
	unsigned int calls, allocs, frees, foreign;
};

static struct folio *mt_alloc_target(struct folio *src, struct mt_alloc *a)
{
	struct folio *dst;

	a->calls++;
	if (!mt_fix_owns(a->f, src))
		a->foreign++;
	if (a->fail)
		return NULL;
	dst = __folio_alloc_node(GFP_HIGHUSER_MOVABLE | __GFP_THISNODE | __GFP_NOWARN,
				 folio_order(src), a->nid);
	if (dst)
		a->allocs++;
	return dst;
}

#if MT_API_FOLIO_CB
static struct folio *mt_new_folio(struct folio *src, unsigned long private)
{
	return mt_alloc_target(src, (struct mt_alloc *)private);
}

static void mt_free_folio(struct folio *dst, unsigned long private)
{
	((struct mt_alloc *)private)->frees++;
	folio_put(dst);
}
#else
static struct page *mt_new_page(struct page *page, unsigned long private)
{
	struct folio *dst = mt_alloc_target(page_folio(page), (struct mt_alloc *)private);

	return dst ? &dst->page : NULL;
}

static void mt_free_page(struct page *page, unsigned long private)
{
	((struct mt_alloc *)private)->frees++;
	put_page(page);
}
#endif

static int mt_migrate(struct mt_fix *f, struct mt_alloc *a,
		      enum migrate_mode mode, unsigned int *succeeded)
{
	*succeeded = UINT_MAX;	/* must be overwritten */
#if MT_API_FOLIO_CB
	return mt_migrate_pages(&f->list, mt_new_folio, mt_free_folio,
				(unsigned long)a, mode, MR_SYSCALL, succeeded);
#else
	return mt_migrate_pages(&f->list, mt_new_page, mt_free_page,
				(unsigned long)a, mode, MR_SYSCALL, succeeded);
#endif
}

/* The list left behind must hold exactly the folios in @mask. */
static void mt_expect_list(struct mt_fix *f, unsigned long mask)
{
	struct mt_case *c = f->c;
	unsigned long seen = 0;
	unsigned int i, n = 0, foreign = 0;
	struct folio *folio;

	list_for_each_entry(folio, &f->list, lru) {
		if (++n > 2 * MT_MAX)
			break;	/* corrupted list: stop */
		for (i = 0; i < f->nr; i++)
			if (f->folio[i] == folio)
				break;
		if (i == f->nr)
			foreign++;
		else if (seen & BIT(i))
			mt_fail(c, "list after migrate_pages(): index %u appears twice", i);
		else
			seen |= BIT(i);
	}
	mt_expect_eq(c, "folios left on the list", n, hweight_long(mask));
	mt_expect_eq(c, "unknown folios on the list", foreign, 0);
	if (seen != mask)
		mt_fail(c, "folios left on the list: expected index mask %#lx, seen %#lx",
			mask, seen);
}

static void mt_expect_callbacks(struct mt_case *c, const struct mt_alloc *a,
				unsigned int migrated)
{
	mt_expect_eq(c, "allocation callback calls with a source folio not on the list",
		     a->foreign, 0);
	mt_expect_eq(c, "target folios allocated minus freed by the free callback",
		     (long long)a->allocs - a->frees, migrated);
}

/*
 * Wait until a folio is on an LRU list with @want references: the
 * per-CPU LRU batches hold references until drained.
 */
static void mt_expect_lru_ref(struct mt_case *c, struct folio *folio,
			      unsigned int idx, int want)
{
	int i;

	for (i = 0; i < 50; i++) {
		if (folio_test_lru(folio) && folio_ref_count(folio) == want)
			return;
		mt_lru_add_drain_all();
		msleep(2);
	}
	if (!folio_test_lru(folio))
		mt_fail(c, "index %u: on an LRU list: expected 1, seen 0", idx);
	if (folio_ref_count(folio) != want)
		mt_fail(c, "index %u: refcount: expected %d, seen %d",
			idx, want, folio_ref_count(folio));
}

/*
 * What the page cache holds now: bit i of @moved says index i must have
 * been migrated to node 1 (a new folio), otherwise it must be the
 * original folio, still on node 0.  In both cases the contents and the
 * dirty flag must be as before, and the folio must be back on an LRU
 * list with the references it had before (ours being replaced by the
 * lookup's, or added to it while we still hold ours).
 */
static void mt_expect_state(struct mt_fix *f, unsigned long moved,
			    struct folio *(*lookup)(struct mt_fix *f, unsigned int i))
{
	struct mt_case *c = f->c;
	unsigned int i;

	for (i = 0; i < f->nr; i++) {
		bool mv = moved & BIT(i);
		int want_nid = mv ? MT_DST_NID : MT_SRC_NID;
		struct folio *folio = lookup(f, i);

		if (!folio)
			continue;
		if (folio_nid(folio) != want_nid)
			mt_fail(c, "index %u: node: expected %d, seen %d",
				i, want_nid, folio_nid(folio));
		if (mv && folio_pfn(folio) == f->pfn[i])
			mt_fail(c, "index %u: expected a new folio, seen the original (pfn %#lx)",
				i, f->pfn[i]);
		if (!mv && folio_pfn(folio) != f->pfn[i])
			mt_fail(c, "index %u: expected the original folio (pfn %#lx), seen pfn %#lx",
				i, f->pfn[i], folio_pfn(folio));
		if (folio_test_dirty(folio) != f->dirty[i])
			mt_fail(c, "index %u: dirty: expected %d, seen %d",
				i, f->dirty[i], folio_test_dirty(folio));
		if (!folio_test_uptodate(folio))
			mt_fail(c, "index %u: uptodate: expected 1, seen 0", i);
		mt_check_page(c, &folio->page, f->filled[i], f->seed, i);
		mt_expect_lru_ref(c, folio, i, f->refcount[i] + (f->ref[i] ? 1 : 0));
		folio_put(folio);
	}
}

/* ------------------------------------------------------------------ */
/* Shmem fixture                                                       */

enum mt_fill { MT_FILL_ALL, MT_FILL_EVEN };

static bool mt_shmem_setup(struct mt_fix *f, unsigned int nr, enum mt_fill fill)
{
	struct mt_case *c = f->c;
	struct mt_pin pin = {};
	unsigned int i;
	u64 *kaddr;
	int ret;

	f->file = shmem_file_setup("migrate_test", (loff_t)nr << PAGE_SHIFT, VM_NORESERVE);
	if (IS_ERR(f->file)) {
		mt_fail(c, "setup: shmem_file_setup() failed: %ld", PTR_ERR(f->file));
		f->file = NULL;
		return false;
	}
	f->mapping = f->file->f_mapping;

	ret = mt_pin_to_node(&pin, MT_SRC_NID);
	if (ret) {
		mt_skip(c, "cannot run on a CPU of node %d (set_cpus_allowed_ptr: %d)",
			MT_SRC_NID, ret);
		return false;
	}
	for (i = 0; i < nr; i++) {
		struct page *page = shmem_read_mapping_page(f->mapping, i);
		struct folio *folio;

		if (IS_ERR(page)) {
			mt_fail(c, "setup: shmem_read_mapping_page(%u) failed: %ld",
				i, PTR_ERR(page));
			break;
		}
		f->ref[i] = page;
		f->nr = i + 1;
		if (fill == MT_FILL_EVEN && (i & 1))
			continue;	/* left as allocated: zero and clean */
		folio = page_folio(page);
		folio_lock(folio);
		kaddr = kmap_local_page(page);
		mt_pattern(kaddr, f->seed, i);
		kunmap_local(kaddr);
		folio_mark_dirty(folio);
		folio_unlock(folio);
		f->filled[i] = true;
	}
	mt_unpin(&pin);
	if (c->failed)
		return false;
	return mt_record(f);
}

static struct folio *mt_shmem_lookup(struct mt_fix *f, unsigned int i)
{
	struct folio *folio = filemap_get_folio(f->mapping, i);

	if (IS_ERR_OR_NULL(folio)) {
		mt_fail(f->c, "index %u: page cache: expected a folio, seen none", i);
		return NULL;
	}
	return folio;
}

/*
 * Cases 1-4 (and the dirty case): every folio is migrated.
 */

/*
 * After a migrate_pages() call that should have moved every folio: its
 * return value and count, the list it leaves (empty; anything left is put
 * back so the case can go on), the callbacks, the isolation counters and
 * what the mapping now holds.
 */
static void mt_expect_all_migrated(struct mt_fix *f, const struct mt_alloc *a, int rc,
				   unsigned int succeeded,
				   struct folio *(*lookup)(struct mt_fix *f, unsigned int i))
{
	struct mt_case *c = f->c;

	mt_expect_eq(c, "migrate_pages() return value", rc, 0);
	mt_expect_eq(c, "*nr_succeeded", succeeded, f->nr);
	mt_expect_list(f, 0);
	mt_expect_callbacks(c, a, f->nr);
	if (!list_empty(&f->list)) {
		mt_putback_movable_pages(&f->list);
		INIT_LIST_HEAD(&f->list);
	}
	mt_lru_add_drain_all();
	mt_iso_expect(c, &f->base, "after migration");
	mt_expect_state(f, BIT(f->nr) - 1, lookup);
}

/*
 * The fixture of a migration case: nr shmem folios filled as `fill` says, all
 * isolated, `a` pointed at it; NULL (the failure reported, nothing left
 * allocated) if it could not be set up.
 */
static struct mt_fix *mt_isolated_fixture(struct mt_case *c, unsigned int nr,
					  enum mt_fill fill, struct mt_alloc *a)
{
	struct mt_fix *f = mt_fix_alloc(c);

	if (!f)
		return NULL;
	a->f = f;
	if (!mt_shmem_setup(f, nr, fill) || !mt_isolate_all(f)) {
		mt_fix_free(f);
		return NULL;
	}
	return f;
}

/* Drop the case's own references to the folios, but those in `keep`. */
static void mt_drop_refs_except(struct mt_fix *f, unsigned int nr, unsigned long keep)
{
	unsigned int i;

	for (i = 0; i < nr; i++)
		if (!(keep & BIT(i)))
			mt_drop_ref(f, i);
}

/*
 * The folios in `left` are still on the list, isolated, until
 * putback_movable_pages() returns them; after it nothing stays isolated
 * and exactly the folios in `migrated` are found at their new place.
 */
static void mt_expect_putback(struct mt_case *c, struct mt_fix *f,
			      unsigned long left, unsigned long migrated)
{
	struct mt_iso want;

	mt_expect_list(f, left);
	mt_iso_with(f, left, &want);
	mt_iso_expect(c, &want, "before putback");
	mt_putback_movable_pages(&f->list);
	INIT_LIST_HEAD(&f->list);
	mt_lru_add_drain_all();
	mt_iso_expect(c, &f->base, "after putback");
	mt_expect_state(f, migrated, mt_shmem_lookup);
}

static void mt_run_all_move(struct mt_case *c, unsigned int nr,
			    enum migrate_mode mode, enum mt_fill fill)
{
	unsigned long all = BIT(nr) - 1;
	struct mt_alloc a = { .nid = MT_DST_NID };
	struct mt_fix *f = mt_isolated_fixture(c, nr, fill, &a);
	struct mt_iso want;
	unsigned int i, succeeded;
	int rc;

	if (!f)
		return;
	if (fill == MT_FILL_EVEN) {
		/* the case is only meaningful with both kinds present */
		for (i = 0; i < nr; i++)
			if (f->dirty[i] != f->filled[i])
				mt_fail(c, "setup: index %u dirty: expected %d, seen %d",
					i, f->filled[i], f->dirty[i]);
		if (c->failed)
			goto out;
	}
	mt_iso_with(f, all, &want);
	mt_iso_expect(c, &want, "after isolation");
	mt_drop_refs_except(f, nr, 0);	/* only the page cache and isolation hold them */

	rc = mt_migrate(f, &a, mode, &succeeded);

	mt_expect_all_migrated(f, &a, rc, succeeded, mt_shmem_lookup);
out:
	mt_fix_free(f);
}

static void mt_case_shmem(struct mt_case *c)
{
	mt_run_all_move(c, MT_MAX, MIGRATE_SYNC, MT_FILL_ALL);
}

static void mt_case_async(struct mt_case *c)
{
	mt_run_all_move(c, 8, MIGRATE_ASYNC, MT_FILL_ALL);
}

static void mt_case_sync_light(struct mt_case *c)
{
	mt_run_all_move(c, 8, MIGRATE_SYNC_LIGHT, MT_FILL_ALL);
}

static void mt_case_sync(struct mt_case *c)
{
	mt_run_all_move(c, 8, MIGRATE_SYNC, MT_FILL_ALL);
}

/* Even indices written and dirty, odd ones never written: clean zeroes. */
static void mt_case_dirty(struct mt_case *c)
{
	mt_run_all_move(c, 8, MIGRATE_SYNC, MT_FILL_EVEN);
}

/*
 * One folio held with an extra reference: migrate_pages() cannot freeze
 * its refcount, retries, then counts it as failed and leaves it on the
 * list; putback_movable_pages() returns it.
 */
static void mt_case_extra_ref(struct mt_case *c)
{
	const unsigned int nr = 8;
	unsigned long held = BIT(MT_HELD), all = BIT(nr) - 1;
	struct mt_alloc a = { .nid = MT_DST_NID };
	struct mt_fix *f = mt_isolated_fixture(c, nr, MT_FILL_ALL, &a);
	unsigned int succeeded;
	int rc;

	if (!f)
		return;
	mt_drop_refs_except(f, nr, held);

	rc = mt_migrate(f, &a, MIGRATE_SYNC, &succeeded);

	mt_expect_eq(c, "migrate_pages() return value", rc, 1);
	mt_expect_eq(c, "*nr_succeeded", succeeded, nr - 1);
	mt_expect_callbacks(c, &a, nr - 1);
	mt_expect_putback(c, f, held, all & ~held);
	mt_fix_free(f);
}

/*
 * The allocation callback returns NULL: -ENOMEM, nothing migrated, every
 * folio still on the list, and after putback nothing leaked.
 */
static void mt_case_enomem(struct mt_case *c)
{
	const unsigned int nr = 8;
	unsigned long all = BIT(nr) - 1;
	struct mt_alloc a = { .nid = MT_DST_NID, .fail = true };
	struct mt_fix *f = mt_isolated_fixture(c, nr, MT_FILL_ALL, &a);
	unsigned int succeeded;
	int rc;

	if (!f)
		return;
	mt_drop_refs_except(f, nr, 0);

	rc = mt_migrate(f, &a, MIGRATE_SYNC, &succeeded);

	mt_expect_eq(c, "migrate_pages() return value", rc, -ENOMEM);
	mt_expect_eq(c, "*nr_succeeded", succeeded, 0);
	if (a.calls < 1)
		mt_fail(c, "allocation callback calls: expected at least 1, seen 0");
	mt_expect_eq(c, "free callback calls", a.frees, 0);
	mt_expect_eq(c, "allocation callback calls with a source folio not on the list",
		     a.foreign, 0);
	mt_expect_putback(c, f, all, 0);
	mt_fix_free(f);
}

/* ------------------------------------------------------------------ */
/* Swap cache: anonymous memory of this (insmod) process               */

#ifdef CONFIG_SWAP
static struct page *mt_user_page(struct mt_fix *f, unsigned int i)
{
	struct page *page;
	int n;

	/* no FOLL_WRITE: a read fault leaves a swapped-in folio in the swap cache */
	n = get_user_pages_fast(f->uaddr + i * PAGE_SIZE, 1, 0, &page);
	if (n != 1) {
		mt_fail(f->c, "index %u: get_user_pages_fast(): expected 1, seen %d", i, n);
		return NULL;
	}
	return page;
}

static struct folio *mt_anon_lookup(struct mt_fix *f, unsigned int i)
{
	struct mt_case *c = f->c;
	struct page *page = mt_user_page(f, i);
	struct folio *folio;

	if (!page)
		return NULL;
	folio = page_folio(page);
	if (!folio_test_anon(folio))
		mt_fail(c, "index %u: anonymous: expected 1, seen 0", i);
	if (!folio_test_swapcache(folio))
		mt_fail(c, "index %u: in the swap cache: expected 1, seen 0", i);
	else if (mt_swap_val(folio) != f->swap[i])
		mt_fail(c, "index %u: swap entry: expected %#lx, seen %#lx",
			i, f->swap[i], mt_swap_val(folio));
	return folio;
}

static void mt_case_swapcache(struct mt_case *c)
{
	const unsigned int nr = 8;
	struct mt_alloc a = { .nid = MT_DST_NID };
	struct mt_pin pin = {};
	struct mt_fix *f;
	unsigned int i, inswap = 0, succeeded;
	u64 *buf = NULL;
	int attempt, rc;

	if (!mt_do_madvise) {
		mt_skip(c, "do_madvise() not found: cannot page out (MADV_PAGEOUT) from the module");
		return;
	}
	if (!current->mm) {
		mt_skip(c, "no user address space in this context");
		return;
	}
	if (get_nr_swap_pages() < nr) {
		mt_skip(c, "no free swap space (%ld pages)", get_nr_swap_pages());
		return;
	}
	f = mt_fix_alloc(c);
	if (!f)
		return;
	a.f = f;
	buf = kmalloc(PAGE_SIZE, GFP_KERNEL);
	if (!buf) {
		mt_fail(c, "setup: out of memory");
		goto out;
	}

	rc = mt_pin_to_node(&pin, MT_SRC_NID);
	if (rc) {
		mt_skip(c, "cannot run on a CPU of node %d (set_cpus_allowed_ptr: %d)",
			MT_SRC_NID, rc);
		goto out;
	}
	f->ulen = nr * PAGE_SIZE;
	f->uaddr = vm_mmap(NULL, 0, f->ulen, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, 0);
	if (IS_ERR_VALUE(f->uaddr)) {
		mt_fail(c, "setup: vm_mmap() failed: %ld", (long)f->uaddr);
		f->uaddr = 0;
		goto out_unpin;
	}
	for (i = 0; i < nr; i++) {
		mt_pattern(buf, f->seed, i);
		if (copy_to_user((void __user *)(f->uaddr + i * PAGE_SIZE), buf, PAGE_SIZE)) {
			mt_fail(c, "setup: copy_to_user() to index %u failed", i);
			goto out_unpin;
		}
		f->filled[i] = true;
	}
	f->nr = nr;

	/* Swap out, then fault back in (read) while still on node 0. */
	for (attempt = 0; attempt < 3; attempt++) {
		mt_lru_add_drain_all();
		rc = mt_do_madvise(current->mm, f->uaddr, f->ulen, MADV_PAGEOUT);
		if (rc) {
			mt_fail(c, "setup: do_madvise(MADV_PAGEOUT): expected 0, seen %d", rc);
			goto out_unpin;
		}
		for (inswap = 0, i = 0; i < nr; i++) {
			f->ref[i] = mt_user_page(f, i);
			if (!f->ref[i])
				goto out_unpin;
			inswap += folio_test_swapcache(page_folio(f->ref[i]));
		}
		if (inswap == nr)
			break;
		for (i = 0; i < nr; i++)
			mt_drop_ref(f, i);
	}
	mt_unpin(&pin);
	if (inswap != nr) {
		mt_skip(c, "MADV_PAGEOUT left only %u of %u pages in the swap cache", inswap, nr);
		goto out;
	}
	for (i = 0; i < nr; i++) {
		struct folio *folio = page_folio(f->ref[i]);

		folio_wait_writeback(folio);
		f->swap[i] = mt_swap_val(folio);
		if (!folio_test_anon(folio) || !folio_mapped(folio)) {
			mt_fail(c, "setup: index %u: anon %d, mapped %d: expected both",
				i, folio_test_anon(folio), folio_mapped(folio));
			goto out;
		}
	}
	if (!mt_record(f) || !mt_isolate_all(f))
		goto out;
	for (i = 0; i < nr; i++)
		mt_drop_ref(f, i);

	rc = mt_migrate(f, &a, MIGRATE_SYNC, &succeeded);

	mt_expect_all_migrated(f, &a, rc, succeeded, mt_anon_lookup);
	/* and what the process itself reads through its page tables */
	for (i = 0; i < nr; i++) {
		if (copy_from_user(buf, (void __user *)(f->uaddr + i * PAGE_SIZE), PAGE_SIZE))
			mt_fail(c, "index %u: copy_from_user() failed", i);
		else
			mt_check_words(c, buf, true, f->seed, i, "user mapping");
	}
	goto out;
out_unpin:
	mt_unpin(&pin);
out:
	kfree(buf);
	mt_fix_free(f);
}
#else
static void mt_case_swapcache(struct mt_case *c)
{
	mt_skip(c, "kernel built without CONFIG_SWAP");
}
#endif

/* ------------------------------------------------------------------ */

static const struct {
	const char *name;
	void (*run)(struct mt_case *c);
} mt_cases[] = {
	{ "shmem_to_node1",		mt_case_shmem },
	{ "mode_async",			mt_case_async },
	{ "mode_sync_light",		mt_case_sync_light },
	{ "mode_sync",			mt_case_sync },
	{ "extra_ref_not_migrated",	mt_case_extra_ref },
	{ "dirty_state_preserved",	mt_case_dirty },
	{ "alloc_fail_enomem",		mt_case_enomem },
	{ "swapcache_anon",		mt_case_swapcache },
};

static int __init migrate_test_init(void)
{
	unsigned int i, pass = 0, fail = 0, skip = 0;
	char topo[120] = "";
	int ret;

	mt_log("KTAP version 1");
	mt_log("1..1");
	mt_log("    KTAP version 1");
	mt_log("    # Subtest: %s", MT_SUITE);
	mt_log("    1..%zu", ARRAY_SIZE(mt_cases));

	ret = mt_resolve();
	if (!ret && (!node_state(MT_SRC_NID, N_MEMORY) || !node_state(MT_DST_NID, N_MEMORY) ||
		     !cpumask_intersects(cpumask_of_node(MT_SRC_NID), cpu_online_mask)))
		snprintf(topo, sizeof(topo),
			 "needs NUMA nodes %d (with CPUs) and %d with memory",
			 MT_SRC_NID, MT_DST_NID);

	for (i = 0; i < ARRAY_SIZE(mt_cases); i++) {
		struct mt_case c = { .name = mt_cases[i].name, .num = i + 1 };

		if (ret)
			mt_fail(&c, "not run: %s", mt_setup_error);
		else if (topo[0])
			mt_skip(&c, "%s", topo);
		else
			mt_cases[i].run(&c);

		if (c.nfail > MT_MAX_DIAG)
			mt_diag(&c, "%u more failed checks not shown", c.nfail - MT_MAX_DIAG);
		if (c.failed) {
			fail++;
			mt_log("    not ok %u %s", c.num, c.name);
		} else if (c.skipped) {
			skip++;
			mt_log("    ok %u %s # SKIP %s", c.num, c.name, c.skip_reason);
		} else {
			pass++;
			mt_log("    ok %u %s", c.num, c.name);
		}
	}
	mt_log("    # Totals: pass:%u fail:%u skip:%u total:%zu",
	       pass, fail, skip, ARRAY_SIZE(mt_cases));
	mt_log("%s 1 %s", fail ? "not ok" : "ok", MT_SUITE);
	return ret;
}

static void __exit migrate_test_exit(void)
{
	/* every case released what it used before init returned */
}

module_init(migrate_test_init);
module_exit(migrate_test_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Drives migrate_pages() directly and reports KTAP");
