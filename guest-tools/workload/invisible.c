/* "Migration is invisible except for where the page is": what user space can observe
 * about a range of pages, its mappings and its accounting, taken before and after a
 * migration and compared (the list and the kernel function each item comes from: README,
 * "What a migration must not change"). */
#include "suite.h"

#include <fcntl.h>

/* /proc/PID/pagemap bits (Documentation/admin-guide/mm/pagemap.rst) */
#define PM_PFN_MASK ((1ULL << 55) - 1)
#define PM_SOFT_DIRTY (1ULL << 55)
#define PM_EXCLUSIVE (1ULL << 56)
#define PM_UFFD_WP (1ULL << 57)
#define PM_FILE (1ULL << 61)
#define PM_SWAP (1ULL << 62)
#define PM_PRESENT (1ULL << 63)
/* Compared exactly; soft-dirty one way: it must not be lost, but 6.1 sets it on a pte that
 * was dirty (remove_migration_pte(): pte_mkdirty(), which on x86 sets _PAGE_SOFT_DIRTY
 * along with _PAGE_DIRTY), so a written page cleared by clear_refs 4 reads soft-dirty again
 * after a migration: a visible effect, reported in the README. */
#define PM_KEPT (PM_EXCLUSIVE | PM_UFFD_WP | PM_FILE | PM_SWAP | PM_PRESENT)

/* /proc/kpageflags bits (include/uapi/linux/kernel-page-flags.h, kernel-page-flags.h) */
enum {
	KPF_REFERENCED = 2, KPF_UPTODATE = 3, KPF_DIRTY = 4, KPF_LRU = 5, KPF_ACTIVE = 6, KPF_MMAP = 11,
	KPF_ANON = 12, KPF_SWAPCACHE = 13, KPF_SWAPBACKED = 14, KPF_COMPOUND_HEAD = 15, KPF_COMPOUND_TAIL = 16,
	KPF_HUGE = 17, KPF_UNEVICTABLE = 18, KPF_KSM = 21, KPF_THP = 22, KPF_MLOCKED = 33, KPF_MAPPEDTODISK = 34,
	KPF_PRIVATE = 35,
};
#define BIT(b) (1ULL << (b))
/* Page flags the new page must have exactly as the old one had them. PG_dirty is
 * compared one way only: migration may move a dirty pte bit into the page flag
 * (try_to_migrate_one(): folio_mark_dirty()), never lose it. */
#define KPF_KEPT                                                                                              \
	(BIT(KPF_REFERENCED) | BIT(KPF_UPTODATE) | BIT(KPF_LRU) | BIT(KPF_ACTIVE) | BIT(KPF_MMAP) | BIT(KPF_ANON) | \
	 BIT(KPF_SWAPCACHE) | BIT(KPF_SWAPBACKED) | BIT(KPF_COMPOUND_HEAD) | BIT(KPF_COMPOUND_TAIL) |              \
	 BIT(KPF_HUGE) | BIT(KPF_UNEVICTABLE) | BIT(KPF_KSM) | BIT(KPF_THP) | BIT(KPF_MLOCKED) |                  \
	 BIT(KPF_MAPPEDTODISK) | BIT(KPF_PRIVATE))

static const char *const kpf_names[64] = {
	[KPF_REFERENCED] = "referenced", [KPF_UPTODATE] = "uptodate", [KPF_DIRTY] = "dirty", [KPF_LRU] = "lru",
	[KPF_ACTIVE] = "active", [KPF_MMAP] = "mmap", [KPF_ANON] = "anon", [KPF_SWAPCACHE] = "swapcache",
	[KPF_SWAPBACKED] = "swapbacked", [KPF_COMPOUND_HEAD] = "compound_head", [KPF_COMPOUND_TAIL] = "compound_tail",
	[KPF_HUGE] = "huge", [KPF_UNEVICTABLE] = "unevictable", [KPF_KSM] = "ksm", [KPF_THP] = "thp",
	[KPF_MLOCKED] = "mlocked", [KPF_MAPPEDTODISK] = "mappedtodisk", [KPF_PRIVATE] = "private",
};

/* smaps fields of the region's VMA, /proc/self/status fields: must not change */
static const char *const smaps_fields[] = { "Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean",
	"Private_Dirty", "Referenced", "Anonymous", "AnonHugePages", "ShmemPmdMapped", "Shared_Hugetlb",
	"Private_Hugetlb", "Swap", "Locked" };
static const char *const status_fields[] = { "VmRSS", "RssAnon", "RssFile", "RssShmem", "VmSwap", "VmLck",
	"HugetlbPages" };

/* Per-node counters (/sys/devices/system/node/nodeN/vmstat) and which pages of the region
 * count in them: they must move from the old node to the new one. */
enum { C_ANON, C_MAPPED, C_FILE, C_SHMEM, C_DIRTY, C_MLOCK, C_SWAPCACHED, C_THP, C_HUGE_USED, NCOUNTERS };
static const char *const counter_names[NCOUNTERS] = { "nr_anon_pages", "nr_mapped", "nr_file_pages",
	"nr_shmem", "nr_dirty", "nr_mlock", "nr_swapcached", "nr_anon_transparent_hugepages",
	"hugetlb pages in use" };

/* Every counter of counter_names for `node` (-1: not found), from one read of its vmstat. */
static void node_counters(int node, long long out[NCOUNTERS])
{
	char path[96], buf[8192];
	long total = hugepages_node(node, "nr_hugepages");
	out[C_HUGE_USED] = total < 0 ? 0 : total - hugepages_node(node, "free_hugepages");
	snprintf(path, sizeof(path), "/sys/devices/system/node/node%d/vmstat", node);
	int have = sysfs_read(path, buf, sizeof(buf)) == 0;
	for (int c = 0; c < NCOUNTERS; c++) {
		if (c == C_HUGE_USED)
			continue;
		out[c] = -1;
		size_t len = strlen(counter_names[c]);
		for (char *l = have ? buf : NULL; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
			if (!strncmp(l, counter_names[c], len) && l[len] == ' ') {
				out[c] = strtoll(l + len + 1, NULL, 10);
				break;
			}
	}
}

static int read_at(int fd, uint64_t *out, size_t n, uint64_t index)
{
	return pread(fd, out, n * 8, (off_t)(index * 8)) == (ssize_t)(n * 8) ? 0 : -1;
}

/* Grows the stack by 512 KiB once (the deepest path of a case is far shallower). */
static __attribute__((noinline)) void stack_grow(void)
{
	volatile char deep[512 * 1024];
	for (size_t i = 0; i < sizeof(deep); i += PAGE)
		deep[i] = 0;
}

/* /proc/self/status counts every page of the process, and 6.12 reads its counters exactly
 * (task_mem(): get_mm_counter_sum()): a page of ours touched for the first time between the
 * two readings would show as a change (a text page of this binary, which lives on tmpfs:
 * 16 pages of RssShmem by fault-around; a heap or stack page: RssAnon). 6.1 hid such
 * changes (each task caches up to 64 counter events, SPLIT_RSS_COUNTING). So our own
 * footprint is settled first (every page of our readable mappings faulted, the private
 * writable ones written: copied on write now; the stack grown), and facts_status() is read
 * right before and right after the migration call, with nothing allocated in between. */
void facts_settle(void)
{
	stack_grow();
	FILE *maps = fopen("/proc/self/maps", "re");
	char line[512];
	while (maps && fgets(line, sizeof(line), maps)) {
		unsigned long lo, hi;
		char perms[5], path[256] = "";
		if (sscanf(line, "%lx-%lx %4s %*s %*s %*s %255s", &lo, &hi, perms, path) < 3 || perms[0] != 'r' ||
		    !strcmp(path, "[vvar]") || !strcmp(path, "[vvar_vclock]") || !strcmp(path, "[vsyscall]"))
			continue;
		for (unsigned long a = lo; a < hi; a += PAGE) {
			volatile char *c = (volatile char *)a;
			if (perms[1] == 'w')
				*c = *c;
			else
				(void)*c;
		}
	}
	if (maps)
		fclose(maps);
}

int facts_take(struct facts *f, void *base, size_t npages)
{
	memset(f, 0, sizeof(*f));
	/* Pages still in a per-CPU LRU batch are not on the LRU yet: drain (migrate_pages(2)
	 * from a node to itself moves nothing but drains every CPU's batches). */
	unsigned long self[2];
	nodemask_of(self, g_node_a);
	sys_migrate_pages(0, MAXNODE, self, self);
	f->base = base;
	f->n = npages;
	f->pm = calloc(npages, 8);
	f->kflags = calloc(npages, 8);
	f->kcount = calloc(npages, 8);
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC), kf = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC),
	    kc = open("/proc/kpagecount", O_RDONLY | O_CLOEXEC);
	int bad = read_at(pm, f->pm, npages, (uintptr_t)base / PAGE);
	for (size_t i = 0; i < npages && !bad; i++) {
		uint64_t pfn = f->pm[i] & PM_PFN_MASK;
		if ((f->pm[i] & PM_PRESENT) && pfn)
			bad = read_at(kf, &f->kflags[i], 1, pfn) || read_at(kc, &f->kcount[i], 1, pfn);
	}
	close(pm);
	close(kf);
	close(kc);
	if (bad)
		return -1;
	smaps_fields_kb(0, (unsigned long)base, smaps_fields, NSMAPS, f->smaps);
	vmstat_refresh();
	node_counters(g_node_a, f->node[0]);
	node_counters(g_node_b, f->node[1]);
	return 0;
}

/* The /proc/self/status fields, read into a buffer on the stack (no allocation). */
void facts_status(long status[NSTATUS])
{
	char buf[4096];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	ssize_t len = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	buf[len > 0 ? len : 0] = 0;
	for (size_t k = 0; k < NSTATUS; k++) {
		char key[32];
		snprintf(key, sizeof(key), "\n%s:", status_fields[k]);
		char *at = strstr(buf, key);
		status[k] = at ? strtol(at + strlen(key), NULL, 10) : -1;
	}
}

void facts_free(struct facts *f)
{
	free(f->pm);
	free(f->kflags);
	free(f->kcount);
	f->pm = f->kflags = f->kcount = NULL;
}

uint64_t facts_pfn(const struct facts *f, size_t i) { return f->pm[i] & PM_PFN_MASK; }
int facts_soft_dirty(const struct facts *f, size_t i) { return !!(f->pm[i] & PM_SOFT_DIRTY); }
int facts_ksm(const struct facts *f, size_t i) { return !!(f->kflags[i] & BIT(KPF_KSM)); }

static void flag_list(uint64_t bits, char *out, size_t n)
{
	out[0] = 0;
	for (int b = 0; b < 64; b++)
		if (bits & BIT(b)) {
			size_t l = strlen(out);
			snprintf(out + l, n - l, "%s%s", l ? "," : "", kpf_names[b] ? kpf_names[b] : "?");
		}
}

/* How many of the region's pages count in counter c (each physical page once). */
static long contribution(const struct facts *f, int c)
{
	long x = 0;
	for (size_t i = 0; i < f->n; i++) {
		uint64_t k = f->kflags[i], pfn = facts_pfn(f, i);
		if (!(f->pm[i] & PM_PRESENT))
			continue;
		int dup = 0;
		for (size_t j = 0; j < i && !dup && (k & BIT(KPF_KSM)); j++)
			dup = facts_pfn(f, j) == pfn;
		if (dup)
			continue;
		int huge = !!(k & BIT(KPF_HUGE)), anon = !!(k & BIT(KPF_ANON));
		switch (c) {
		case C_ANON: x += anon && !huge; break;
		case C_MAPPED: x += !anon && !huge; break;
		case C_FILE: x += (!anon || (k & BIT(KPF_SWAPCACHE))) && !huge; break;
		case C_SHMEM: x += !anon && (k & BIT(KPF_SWAPBACKED)) && !huge; break;
		case C_DIRTY: x += !anon && !(k & BIT(KPF_SWAPBACKED)) && (k & BIT(KPF_DIRTY)) && !huge; break;
		case C_MLOCK: x += !!(k & BIT(KPF_MLOCKED)) && !huge; break;
		case C_SWAPCACHED: x += !!(k & BIT(KPF_SWAPCACHE)); break;
		case C_THP: x += (k & BIT(KPF_THP)) && (k & BIT(KPF_COMPOUND_HEAD)); break;
		case C_HUGE_USED: x += huge && (k & BIT(KPF_COMPOUND_HEAD)); break;
		}
	}
	return x;
}

void facts_expect_same(const char *what, const struct facts *b, const struct facts *a, int from, int to)
{
	long bad = 0;
	for (size_t i = 0; i < b->n && bad < 4; i++) {
		uint64_t pmb = b->pm[i] & PM_KEPT, pma = a->pm[i] & PM_KEPT;
		if (pmb != pma || ((b->pm[i] & PM_SOFT_DIRTY) && !(a->pm[i] & PM_SOFT_DIRTY))) {
			pma |= a->pm[i] & PM_SOFT_DIRTY;
			pmb |= b->pm[i] & PM_SOFT_DIRTY;
			failf("%s: page %zu: pagemap bits 0x%llx (soft-dirty %d, exclusive %d, file/shared %d, swap %d, "
			      "present %d), expected 0x%llx as before the migration", what, i, (unsigned long long)(pma >> 55),
			      !!(pma & PM_SOFT_DIRTY), !!(pma & PM_EXCLUSIVE), !!(pma & PM_FILE), !!(pma & PM_SWAP),
			      !!(pma & PM_PRESENT), (unsigned long long)(pmb >> 55));
			bad++;
			continue;
		}
		uint64_t kb = b->kflags[i], ka = a->kflags[i];
		uint64_t diff = (kb ^ ka) & KPF_KEPT;
		if ((kb & BIT(KPF_DIRTY)) && !(ka & BIT(KPF_DIRTY)))
			diff |= BIT(KPF_DIRTY);
		if (diff) {
			char lost[256], gained[256];
			flag_list(diff & kb, lost, sizeof(lost));
			flag_list(diff & ka, gained, sizeof(gained));
			failf("%s: page %zu: page flags lost [%s] gained [%s] in the migration (kpageflags 0x%llx -> 0x%llx), "
			      "expected the same", what, i, lost, gained, (unsigned long long)kb, (unsigned long long)ka);
			bad++;
		}
		if (b->kcount[i] != a->kcount[i]) {
			failf("%s: page %zu: mapcount (kpagecount) %llu, expected %llu as before", what, i,
			      (unsigned long long)a->kcount[i], (unsigned long long)b->kcount[i]);
			bad++;
		}
	}
	for (size_t k = 0; k < NSMAPS; k++)
		CHECK(b->smaps[k] == a->smaps[k], "%s: smaps %s of the region %ld kB, expected %ld kB as before", what,
		      smaps_fields[k], a->smaps[k], b->smaps[k]);
	for (size_t k = 0; k < NSTATUS; k++)
		CHECK(b->status[k] == a->status[k], "%s: /proc/self/status %s %ld kB, expected %ld kB as before", what,
		      status_fields[k], a->status[k], b->status[k]);
	if (from == to)
		return;
	/* Node counters: what the region contributed moves from `from` to `to`; other pages of
	 * the guest may come and go a little meanwhile (tolerance), never the region's share. */
	int fi = from == g_node_a ? 0 : 1, ti = 1 - fi;
	for (int c = 0; c < NCOUNTERS; c++) {
		long x = contribution(b, c), tol = (c == C_THP || c == C_HUGE_USED) ? 0 : 32;
		long long df = a->node[fi][c] - b->node[fi][c], dt = a->node[ti][c] - b->node[ti][c];
		if (x < 2 * tol && x)
			continue; /* too few pages to tell from the noise */
		CHECK(dt >= x - tol && df <= -x + tol && llabs(df + dt) <= tol,
		      "%s: per-node %s changed by %+lld on node %d and %+lld on node %d, expected the region's %ld "
		      "to move from node %d to node %d (sum unchanged, tolerance %ld)", what, counter_names[c], df, from,
		      dt, to, x, from, to, tol);
	}
}
