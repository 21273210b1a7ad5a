/* Shared declarations of the migrate_suite guest workload (see README.md). */
#ifndef MIGRATE_SUITE_H
#define MIGRATE_SUITE_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* <linux/mempolicy.h> values, spelled out so the build needs no kernel headers. */
#ifndef MPOL_DEFAULT
#define MPOL_DEFAULT 0
#define MPOL_BIND 2
#endif
#ifndef MPOL_MF_STRICT
#define MPOL_MF_STRICT (1 << 0)
#define MPOL_MF_MOVE (1 << 1)
#define MPOL_MF_MOVE_ALL (1 << 2)
#endif

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#endif

#define PAGE 4096UL
#define WORDS_PER_PAGE (PAGE / sizeof(uint64_t))
#define HPAGE (2UL << 20)
#define MASK_BITS 64            /* bits in the node masks we pass */
#define MAXNODE (MASK_BITS + 1) /* the kernel reads maxnode - 1 bits */
#define NOBODY 65534
#define STATUS_UNSET (-7777) /* sentinel: "the kernel did not write this status" */

enum { PASS = 0, FAIL = 1, SKIP = 2 }; /* a case's verdict: its process's exit status */

/* ---- global facts about the machine (util.c) ---- */
extern int g_node_a, g_node_b; /* two nodes with memory */
extern int g_nr_mem_nodes;
extern int g_kver_major, g_kver_minor;
extern int g_failures;      /* checks failed in the current case */
extern char *g_skip_reason; /* shared with the runner (MAP_SHARED) */

int kernel_at_least(int major, int minor);
void detect_machine(void);
int read_list(const char *path, int *out, int max); /* a kernel list file ("0-1,4"): how many, -1 */

/* What a case of the topology suite needs of the machine (cases_topology.c). */
enum {
	TOPO_3_MEM_NODES = 1 << 0, /* three nodes with memory */
	TOPO_MEMORYLESS = 1 << 1,  /* a node online with CPUs but no memory */
	TOPO_CPULESS = 1 << 2,     /* a node with memory but no CPUs */
	TOPO_REMOVABLE = 1 << 3,   /* an online memory block in ZONE_MOVABLE */
	TOPO_LOWER_TIER = 1 << 4,  /* a node with memory in a lower memory tier than a node with CPUs */
};
/* 0 when the machine offers every need, else 1 and "needs: ... (found ...)" in why. */
int topology_unmet(unsigned needs, char *why, size_t n);

/* ---- output ---- */
void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Record a failed check (and say what was expected / seen). */
void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define CHECK(cond, ...) do { if (!(cond)) failf(__VA_ARGS__); } while (0)
const char *errname(int e);
const char *statusname(int st); /* "node 1" or "-ENOENT" etc.; static buffer ring */

/* ---- raw syscalls ---- */
long sys_move_pages(pid_t pid, unsigned long n, void **pages, const int *nodes, int *status, int flags);
long sys_migrate_pages(pid_t pid, unsigned long maxnode, const unsigned long *old, const unsigned long *new_);
long sys_mbind(void *addr, unsigned long len, int mode, const unsigned long *mask, unsigned long maxnode,
               unsigned flags);
long sys_set_mempolicy(int mode, const unsigned long *mask, unsigned long maxnode);
long sys_get_mempolicy(int *mode, unsigned long *mask, unsigned long maxnode, void *addr, unsigned long flags);
void nodemask_of(unsigned long mask[2], int node); /* mask with one node (node < 128) */

/* Allocate future pages of this task on `node` (MPOL_BIND), or back to default (node < 0). */
int bind_task_to(int node);
/* Restrict the CPUs of this task to those of `node` (node < 0: all CPUs). */
int run_on_node_cpus(int node);
int node_has_cpus(int node); /* 0 for a CPU-less node */

/* ---- memory regions ---- */
/* n pages at a fresh address, in a VMA of their own (PROT_NONE guard pages around it
 * so it never merges with a neighbour): numa_maps/smaps lines start at the address. */
void *map_region(size_t npages, int flags, int fd, off_t off);
void unmap_region(void *p, size_t npages);
void fill_pattern(void *base, size_t first_page, size_t npages, uint64_t seed);
char *anon_pages_on(int node, size_t npages, uint64_t seed); /* private anon pages, filled, on `node` */
/* Checks pages [first, first+n) against seed; returns the number of bad pages and
 * reports the first bad byte (offset from base). */
long check_pattern(const char *what, const void *base, size_t first_page, size_t npages, uint64_t seed);
uint64_t pattern_word(uint64_t seed, size_t page, size_t word);
void touch_read(const void *base, size_t npages);

/* ---- observations ---- */
/* move_pages query mode (nodes == NULL); fills out[n]; returns syscall result. */
long query_pages(pid_t pid, void *base, size_t npages, int *out);
/* Query pages [0,n) of base and expect each to be on `node`; returns number wrong. */
long expect_on_node(const char *what, pid_t pid, void *base, size_t npages, int node);
long expect_statuses(const char *what, pid_t pid, void *base, size_t npages, const int *expected);
/* move_pages(pid, n pages of base, targets[] (or all to `node` if targets NULL)); status[]
 * is preset to STATUS_UNSET. Returns the syscall result (errno kept). */
long move_region(pid_t pid, void *base, size_t npages, const int *targets, int node, int *status, int flags);
/* Check a move_pages status array against expected values; returns number wrong. */
long check_status_array(const char *what, const int *status, const int *expected, size_t n);
/* move_pages(self, all n pages -> node), then expect: return 0, every status `node`,
 * the query and numa_maps agree (the VMA at base holds exactly these n pages). */
void move_all_expect(const char *what, void *base, size_t npages, int node);

struct numa_line {
	int found;
	char policy[64];
	long n[MASK_BITS]; /* pages per node */
	long dirty, mapped, swapcache;
	long total;        /* sum of n[] */
};
int numa_maps_get(pid_t pid, unsigned long addr, struct numa_line *out);
/* Expect the VMA at addr to have exactly ca pages on node na, cb on nb (nb < 0: none)
 * and no page elsewhere; returns 1 if not. */
int expect_numa_split(const char *what, pid_t pid, void *addr, int na, long ca, int nb, long cb);
static inline int expect_numa_maps(const char *what, pid_t pid, void *addr, int node, long count)
{
	return expect_numa_split(what, pid, addr, node, count, -1, 0);
}
/* Sum of N<node>= over every VMA of pid; prints up to print_limit of those VMAs. */
long numa_maps_pages_on(pid_t pid, int node, int print_limit);
long smaps_get_kb(pid_t pid, unsigned long addr, const char *field);
void smaps_fields_kb(pid_t pid, unsigned long addr, const char *const *fields, size_t n, long *out);
long status_get_kb(pid_t pid, const char *field); /* /proc/pid/status */
long node_free_kb(int node); /* MemFree of nodeN/meminfo in kB, -1 if unreadable */
long long vmstat_get(const char *name);
void vmstat_refresh(void); /* fold per-cpu node counters (stat_refresh) */
struct isolated {
	long long anon, file; /* nr_isolated_anon, nr_isolated_file */
};
struct isolated isolated_now(void); /* after vmstat_refresh() */
/* Expect the isolated counters back at `base` (a few tries); returns 1 if not. */
int expect_isolated_back(const char *what, struct isolated base);
int drop_caches(void);
#define TMPFS_MAGIC_ 0x01021994
#define EXT4_MAGIC_ 0xEF53
int fs_is(const char *dir, long magic); /* statfs f_type */
int swap_active(void);
/* MADV_PAGEOUT until the query says -ENOENT for every page (a few tries); 1 if so. */
int page_out_all(char *r, size_t n);

/* ---- processes ---- */
int wait_child(pid_t pid, int timeout_s, const char *what); /* exit status, -1 on signal/timeout */
int become_nobody(void);
int read_full(int fd, void *buf, size_t n);
int write_full(int fd, const void *buf, size_t n);
int pin_page_in_pipe(void *page, int pipefd[2]); /* vmsplice one page; 0 ok */
/* Drain the pipe and close it; what it returned must be the page's current content
 * (the pipe still pinned the page that is mapped). */
void unpin_pipe_expect(int pipefd[2], const void *page, const char *what);
double now_s(void);

/* A helper process holding npages at base (mapped by the caller before the start, so the
 * address is the same in both), driven over two pipes by one-byte commands. At start it
 * fills the pages with `seed` on `node` (MPOL_BIND), or, with node < 0, reads them
 * (pages already there, e.g. MAP_SHARED: it maps them too). It answers each command with
 * '0' (done, data intact) or '1'; it exits 0, or 1 if one of its checks failed. */
struct helper {
	pid_t pid;
	int cmd[2], reply[2];
	char *base;
	size_t npages;
	int node;
	uint64_t seed;
};
enum { HELPER_VERIFY = 'V', HELPER_REWRITE = 'W' /* with seed + 1 */, HELPER_QUIT = 'Q' };
int helper_start(struct helper *h, char *base, size_t npages, int node, uint64_t seed); /* 0 ok */
int helper_ask(struct helper *h, char cmd); /* the reply byte, -1 if the helper is gone */
void helper_quit(struct helper *h, const char *what); /* and expect exit status 0 */

/* ---- physical memory (physmem.c) ---- */
uint64_t pfn_of(const void *addr);                             /* /proc/self/pagemap (root); 0: not present */
int pfns_of(const void *base, size_t npages, uint64_t *out); /* the same for npages; 0 ok */
#define KPF_HWPOISON_BIT 19                                   /* include/uapi/linux/kernel-page-flags.h */
#define KPF_SLAB_BIT 7
int kpageflag(uint64_t pfn, int bit);                         /* /proc/kpageflags: 1, 0, or -1 */
long long meminfo_kb(const char *field);                      /* /proc/meminfo, e.g. "HardwareCorrupted" */
/* Free blocks of order >= min_order on node (/proc/buddyinfo), in units of 2^min_order pages. */
long buddy_free_blocks(int node, int min_order);
struct zone_info {
	int node;
	char name[16];
	long start_pfn, spanned, free, free_cma, high; /* pages; high: the high watermark */
};
int zones_get(struct zone_info *out, int max); /* /proc/zoneinfo; how many */
int zone_of_pfn(uint64_t pfn, struct zone_info *out); /* 0 ok */
int node_has_movable_zone(int node);                    /* ZONE_MOVABLE spans some of it */
long hugetlb_node_pages(int node);              /* 2 MiB pages in node's pool, -1 */
long hugetlb_node_set(int node, long count);    /* ask for count; returns how many it has, -1 */
int run_on_cpu_of(int node);                    /* pin this task to node's first CPU */
char *map_thp_region(void); /* a 2 MiB-aligned 2 MiB VMA with MADV_HUGEPAGE (guard VMAs around) */
int thp_available(void);    /* THP "enabled" is not [never] */

/* ---- migrate:mm_migrate_pages trace events (trace.c) ---- */
#define REASON_SYSCALL "syscall_or_cpuset" /* MR_SYSCALL: move_pages(2), migrate_pages(2), cpusets */
#define REASON_MBIND "mempolicy_mbind"     /* MR_MEMPOLICY_MBIND: mbind(2) */
#define REASON_COMPACTION "compaction"         /* MR_COMPACTION */
#define REASON_MEMORY_FAILURE "memory_failure" /* MR_MEMORY_FAILURE: soft offline */
#define REASON_NUMA_MISPLACED "numa_misplaced" /* MR_NUMA_MISPLACED: NUMA balancing */
#define REASON_CONTIG_RANGE "contig_range"     /* MR_CONTIG_RANGE: alloc_contig_range(), CMA */
#define REASON_MEMORY_HOTPLUG "memory_hotplug" /* MR_MEMORY_HOTPLUG: a memory block going offline */
#define REASON_LONGTERM_PIN "longterm_pin"     /* MR_LONGTERM_PIN: FOLL_LONGTERM out of ZONE_MOVABLE */
#define REASON_DEMOTION "demotion"             /* MR_DEMOTION: reclaim into a lower memory tier */
void trace_setup(void);    /* at suite start; says once if tracing is unavailable */
void trace_teardown(void); /* at the end: the event off again */
int trace_available(void);
void trace_clear(void);  /* before each case */
void trace_report(void); /* after each case: "# migrate_reason: REASON events=N succeeded=S failed=F" */
/* Events with this reason since the case started, with their nr_succeeded and nr_failed
 * summed; -1 when tracing is unavailable. */
int trace_count(const char *reason, long *succeeded, long *failed);
/* Expect the events of `reason` since the last mark to have succeeded in [smin, smax] and
 * failed == f (TRACE_ANY_FAILED: any); no check when tracing is unavailable. `mark` holds
 * the totals so far. */
#define TRACE_ANY_FAILED (-1L)
struct trace_mark {
	long succeeded, failed;
};
struct trace_mark trace_mark(const char *reason);
void expect_trace(const char *what, const char *reason, struct trace_mark since, long smin, long smax, long f);

/* ---- machine settings a case changes, restored by the runner after it (settings.c) ---- */
void settings_init(void);    /* once, before the first case */
void settings_restore(void); /* after every case: old values back, directories removed */
int sysfs_read(const char *path, char *buf, size_t n); /* trailing newlines cut; 0 ok */
long sysfs_long(const char *path);                     /* -1 if unreadable */
int sysfs_write(const char *path, const char *val);    /* 0 ok, errno kept */
int setting_write(const char *path, const char *val); /* remembers the old value first */
void few_pcp_pages(void); /* per-CPU free lists at their floor for the case (util.c) */
int setting_write_long(const char *path, long val);
int setting_mkdir(const char *path); /* a directory removed after the case (cgroups) */

/* ---- what a migration must not change (invisible.c) ---- */
#define NSMAPS 14
#define NSTATUS 7
struct facts {
	void *base;
	size_t n;
	uint64_t *pm, *kflags, *kcount; /* per page: pagemap entry, kpageflags, kpagecount */
	long smaps[NSMAPS], status[NSTATUS];
	long long node[2][9]; /* nodes A and B: the per-node counters */
};
void facts_settle(void); /* first: our own pages faulted, so only a migration changes the counters */
int facts_take(struct facts *f, void *base, size_t npages); /* as root; 0 ok; not ->status */
void facts_status(long status[NSTATUS]);                    /* right before and after the call */
void facts_free(struct facts *f);
uint64_t facts_pfn(const struct facts *f, size_t i);
int facts_soft_dirty(const struct facts *f, size_t i);
int facts_ksm(const struct facts *f, size_t i);
/* Everything in `before` must be in `after` too, except where the pages are; the region's
 * share of the per-node counters must have moved from node `from` to node `to`. */
void facts_expect_same(const char *what, const struct facts *before, const struct facts *after, int from, int to);

/* ---- page kinds and the migration APIs (cases_kinds.c, used by the hugetlb/KSM cases) ---- */
#define HUGE_SYSFS "/sys/devices/system/node/node%d/hugepages/hugepages-2048kB/%s"
long hugepages_node(int node, const char *file); /* nr_hugepages, free_hugepages, surplus_hugepages */
/* Set node's nr_hugepages to `nr` (restored after the case); returns what the kernel got. */
long hugepages_set(int node, long nr);
void *hugetlb_pages_on(int node, size_t nhuge, uint64_t seed); /* MAP_HUGETLB, filled; NULL on failure */
int ksm_start(void); /* run=1 with a fast scan (restored after the case); 0 ok */
/* ksmd on (1) or stopped with merged pages kept merged (0): a migration racing with ksmd's
 * look at a page fails for that page (its reference), so cases stop it while moving. */
void ksm_scanning(int on);
/* Wait for ksmd to have done `scans` more full scans; 0 ok, -1 after 10 s. */
int ksm_wait_scans(int scans);
/* n pairs of private pages on node, page i and n + i alike, merged by ksmd (2n pages). */
char *ksm_pairs_on(int node, size_t n, uint64_t seed);
size_t ksm_pairs_merged(char *p, size_t n); /* pairs that are one KSM page (pagemap PFN, kpageflags) */

/* ---- tasks of a case that overran its deadline (stuck.c) ---- */
struct task_info {
	pid_t pid, tid;
	char state; /* /proc/PID/task/TID/stat: R, S, D, ... */
	char comm[24];
	char stack[2048]; /* kernel stack (/proc/PID/task/TID/stack), or what wchan says */
	char top[128];    /* the first frame that is not a wait, e.g. kernel_move_pages+0x8d/0x1a0 */
};
/* The live tasks (threads; zombies left out) of process group pgrp, up to max. */
int group_tasks(pid_t pgrp, struct task_info *out, int max);
void kernel_stack(struct task_info *t); /* fills stack and top */

/* ---- cases ---- */
int case_three_node_migrate_pages(void); /* the topology suite (migrate_suite --topology) */
int case_memoryless_target(void);
int case_memoryless_local_alloc(void);
int case_cpuless_place_move(void);
int case_memory_offline(void);
int case_longterm_pin(void);
int case_demotion(void);
int case_anon_move_pages(void);
int case_migrate_pages_other_process(void);
int case_mbind_move(void);
int case_shared_anon_move_all(void);
int case_file_pages_tmpfs(void);
int case_file_pages_ext4(void);
int case_swap_pages(void);
int case_thp_move(void);
int case_unmovable_page(void);
int case_concurrent_bounce(void);
int case_permissions_unprivileged(void);
int case_bad_args(void);
int case_migration_counters(void);
int case_query_mode(void);
int case_compaction(void);
int case_soft_offline(void);
int case_numa_balancing(void);
int case_contig_range(void);
int case_hugetlb_move(void);
int case_ksm_move_all(void);
int case_cpuset_mems(void);
int case_kinds_x_apis(void);
int case_kinds_short_target(void);

#endif
