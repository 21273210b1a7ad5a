/* Case: ksm_move_all. Pages merged by KSM (one page mapped at two addresses of this
 * process and, after a fork, of a child too) moved with MPOL_MF_MOVE_ALL.
 * merge_across_nodes is left at its default, 1 (Documentation/admin-guide/mm/ksm.rst):
 * one stable tree for all nodes, so a merged page may move to another node and stay
 * merged; ksm_migrate_page() (folio_migrate_ksm() in 6.1) points the stable node at the
 * new page. With 0, a page moved off its node would be unmerged or re-homed by ksmd. */
#include "suite.h"

#define KSM "/sys/kernel/mm/ksm/"

static long ksm_count(void) { return sysfs_long(KSM "pages_shared") + sysfs_long(KSM "pages_sharing"); }

/* All n pairs still one KSM page each, on `node`, data intact, counters as before, the
 * child's view too; and still so after ksmd has scanned twice more (a stable node left
 * pointing at the old page would be found stale by then). */
static void expect_merged_on(const char *what, char *p, size_t n, int node, long shared0, long sharing0,
                             struct helper *child)
{
	expect_on_node(what, 0, p, 2 * n, node);
	expect_on_node(what, child->pid, p, n, node);
	check_pattern(what, p, 0, n, 31);
	check_pattern(what, p + n * PAGE, 0, n, 31);
	int v = helper_ask(child, HELPER_VERIFY);
	CHECK(v == '0', "%s: the child sharing the pages replied %d to 'verify', expected '0' (data intact)", what, v);
	ksm_scanning(1);
	for (int round = 0; round < 2; round++) {
		size_t merged = ksm_pairs_merged(p, n);
		long shared = sysfs_long(KSM "pages_shared"), sharing = sysfs_long(KSM "pages_sharing");
		CHECK(merged == n && shared == shared0 && sharing == sharing0,
		      "%s%s: %zu of %zu pairs are one KSM page, pages_shared %ld pages_sharing %ld, expected all, %ld and %ld",
		      what, round ? " (after two more ksmd scans)" : "", merged, n, shared, sharing, shared0, sharing0);
		if (!round)
			ksm_wait_scans(2);
	}
	ksm_scanning(0);
}

int case_ksm_move_all(void)
{
	enum { N = 16 };
	const int A = g_node_a, B = g_node_b;
	if (!kernel_at_least(6, 7) && !node_has_cpus(B)) /* the mbind(2) half runs on B's CPUs (below) */
		return skip("needs: CPUs on node %d before 6.7 (a CPU-less node)", B);
	if (ksm_start())
		return skip("no KSM (/sys/kernel/mm/ksm/run)");
	char *p = ksm_pairs_on(A, N, 31);
	if (!p || g_failures)
		return FAIL;
	struct helper child; /* a forked child maps the same KSM pages */
	if (helper_start(&child, p, N, -1, 31))
		return FAIL;
	ksm_wait_scans(2); /* ksmd also scans the child's (inherited, mergeable) VMA: let it settle */
	ksm_scanning(0);   /* while pages move: a migration meeting ksmd's reference fails */
	long shared0 = sysfs_long(KSM "pages_shared"), sharing0 = sysfs_long(KSM "pages_sharing");
	diag("%d pairs merged: pages_shared %ld, pages_sharing %ld", N, shared0, sharing0);
	void *pages[N];
	int to[N], st[N], exp[N];
	for (int i = 0; i < N; i++)
		pages[i] = p + i * PAGE, to[i] = B;

	/* MPOL_MF_MOVE: the pages are mapped more than once: -EACCES each, nothing moves. */
	long ret = sys_move_pages(0, N, pages, to, st, MPOL_MF_MOVE);
	for (int i = 0; i < N; i++)
		exp[i] = -EACCES;
	CHECK(ret == 0, "move_pages(MOVE) of KSM pages returned %ld (%s), expected 0", ret, errname(errno));
	check_status_array("move_pages(MOVE) of KSM pages", st, exp, N);
	expect_on_node("after move_pages(MOVE) of KSM pages", 0, p, 2 * N, A);

	/* MPOL_MF_MOVE_ALL: they move, and stay merged. */
	struct trace_mark t0 = trace_mark(REASON_SYSCALL);
	ret = sys_move_pages(0, N, pages, to, st, MPOL_MF_MOVE_ALL);
	for (int i = 0; i < N; i++)
		exp[i] = B;
	CHECK(ret == 0, "move_pages(MOVE_ALL) of KSM pages returned %ld (%s), expected 0", ret, errname(errno));
	check_status_array("move_pages(MOVE_ALL) of KSM pages", st, exp, N);
	expect_trace("move_pages(MOVE_ALL) of KSM pages", REASON_SYSCALL, t0, N, N, 0);
	expect_merged_on("KSM pages after move_pages(MOVE_ALL)", p, N, B, shared0, sharing0, &child);

	unsigned long maskA[2];
	nodemask_of(maskA, A);
	/* Before 6.7 mbind(2) allocates a KSM page's new page by the task's policy, not the
	 * VMA's (cases_kinds.c, ksm_mbind_stays()): run on B's CPUs, the pages stay on B. */
	int dest = kernel_at_least(6, 7) ? A : B;
	run_on_node_cpus(B);
	struct trace_mark t1 = trace_mark(REASON_MBIND);
	/* Each KSM page is mapped twice in the range: the second address finds it isolated
	 * already, which MPOL_MF_STRICT reports as EIO (6.1 migrate_folio_add()); it moves. */
	ret = sys_mbind(p, 2 * N * PAGE, MPOL_BIND, maskA, MAXNODE, MPOL_MF_MOVE_ALL | MPOL_MF_STRICT);
	CHECK(ret == -1 && errno == EIO, "mbind(MOVE_ALL|STRICT) of KSM pages mapped twice in the range returned %ld "
	      "(%s), expected EIO", ret, errname(ret ? errno : 0));
	expect_trace("mbind(MOVE_ALL) of KSM pages", REASON_MBIND, t1, N, N, 0);
	run_on_node_cpus(-1);
	expect_merged_on("KSM pages after mbind(MOVE_ALL)", p, N, dest, shared0, sharing0, &child);

	/* A write unmerges one mapping (copy on write): the other mappings keep the data. */
	long c0 = ksm_count();
	fill_pattern(p, 0, 1, 32);
	check_pattern("the page written after the moves", p, 0, 1, 32);
	check_pattern("its former KSM sharer at the other address", p + N * PAGE, 0, 1, 31);
	int v = helper_ask(&child, HELPER_VERIFY);
	CHECK(v == '0', "after the parent's write the child replied %d to 'verify', expected '0' (its copy unchanged)", v);
	ksm_scanning(1);
	ksm_wait_scans(2); /* ksmd notices the broken sharing when it scans the address again */
	long c1 = ksm_count();
	CHECK(c1 == c0 - 1, "pages_shared + pages_sharing %ld after one mapping was written, expected %ld (one less)",
	      c1, c0 - 1);
	helper_quit(&child, "KSM sharer child");
	unmap_region(p, 2 * N);
	return PASS;
}
