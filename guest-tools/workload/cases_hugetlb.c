/* Case: hugetlb_move. MAP_HUGETLB pages moved by move_pages(2) and mbind(2), and what the
 * hugetlb pools of the two nodes say about it (6.1 mm/migrate.c, mm/hugetlb.c):
 * - the target's pool has a free huge page: the page moves into it (dequeue); the old
 *   page goes back to the source's pool as free;
 * - the target's pool has none: alloc_huge_page_nodemask() falls back to a fresh page from
 *   the buddy allocator ("temporary"); move_hugetlb_state() hands the temporary state to
 *   the old page, which leaves the pool when freed: the page takes its pool slot along;
 * - neither a free huge page nor memory for one: -ENOMEM (kinds_short_target);
 * - an address inside the huge page (not its head): 6.1's add_page_for_migration() only
 *   isolates the head page and leaves the -EACCES it had set for the mapcount check; 6.12's
 *   add_folio_for_migration() finds the folio of any address (folio_walk_start()) and
 *   isolates it (__add_folio_for_migration(): isolate_hugetlb(folio)): that whole huge page
 *   moves, the other one stays. */
#include "suite.h"

#include <sys/mman.h>

struct pools {
	long nr[2], fr[2], surplus[2];
};

static struct pools pools_now(void)
{
	struct pools p;
	for (int i = 0; i < 2; i++) {
		int n = i ? g_node_b : g_node_a;
		p.nr[i] = hugepages_node(n, "nr_hugepages");
		p.fr[i] = hugepages_node(n, "free_hugepages");
		p.surplus[i] = hugepages_node(n, "surplus_hugepages");
	}
	return p;
}

static void expect_pools(const char *what, struct pools want)
{
	struct pools p = pools_now();
	for (int i = 0; i < 2; i++)
		CHECK(p.nr[i] == want.nr[i] && p.fr[i] == want.fr[i] && p.surplus[i] == want.surplus[i],
		      "%s: node %d hugepages nr/free/surplus %ld/%ld/%ld, expected %ld/%ld/%ld", what,
		      i ? g_node_b : g_node_a, p.nr[i], p.fr[i], p.surplus[i], want.nr[i], want.fr[i], want.surplus[i]);
}

/* Every 4 KiB address of the k huge pages on `to`, data intact. */
static void expect_huge_on(const char *what, char *base, int k, int to)
{
	expect_on_node(what, 0, base, k * HPAGE / PAGE, to);
	check_pattern(what, base, 0, k * HPAGE / PAGE, 61);
}

int case_hugetlb_move(void)
{
	enum { K = 2 };
	const int A = g_node_a, B = g_node_b;
	const size_t NP = K * HPAGE / PAGE;
	if (hugepages_node(A, "nr_hugepages") < 0)
		return skip("no 2 MiB hugetlb pages (CONFIG_HUGETLBFS)");
	long used_b = hugepages_node(B, "nr_hugepages") - hugepages_node(B, "free_hugepages");
	char *p = hugetlb_pages_on(A, K, 61);
	if (!p || hugepages_set(B, used_b + K) != used_b + K) {
		failf("could not reserve %d huge pages on node %d and %d on node %d, expected to", K, A, K, B);
		return FAIL;
	}
	struct pools p0 = pools_now();
	diag("pools before: node %d %ld/%ld free, node %d %ld/%ld free", A, p0.fr[0], p0.nr[0], B, p0.fr[1], p0.nr[1]);
	if (expect_on_node("precondition: huge pages on A", 0, p, NP, A))
		return FAIL;
	void *heads[K];
	int to[K], st[K];
	for (int i = 0; i < K; i++)
		heads[i] = p + i * HPAGE;

	/* 1. move_pages to B, whose pool has K free pages. */
	struct trace_mark t0 = trace_mark(REASON_SYSCALL);
	for (int i = 0; i < K; i++)
		to[i] = B, st[i] = STATUS_UNSET;
	long ret = sys_move_pages(0, K, heads, to, st, MPOL_MF_MOVE);
	CHECK(ret == 0 && st[0] == B && st[1] == B, "move_pages(huge pages -> %d) returned %ld (%s), statuses %s %s, "
	      "expected 0, node %d", B, ret, errname(ret ? errno : 0), statusname(st[0]), statusname(st[1]), B);
	expect_huge_on("huge pages moved into node B's pool", p, K, B);
	expect_trace("move_pages of the huge pages", REASON_SYSCALL, t0, NP, NP, 0);
	struct pools w = p0;
	w.fr[0] += K, w.fr[1] -= K;
	expect_pools("after move_pages into B's pool (A's old pages free again, B's taken)", w);

	/* 2. An address inside a huge page, not its head. */
	void *tail = p + 300 * PAGE;
	int back = A, s1 = STATUS_UNSET;
	ret = sys_move_pages(0, 1, &tail, &back, &s1, MPOL_MF_MOVE);
	diag("move_pages by a tail address of a huge page: returned %ld, status %s", ret, statusname(s1));
	if (!kernel_at_least(6, 2))
		CHECK(ret == 0 && s1 == -EACCES, "move_pages by a tail address returned %ld, status %s, expected 0 and "
		      "-EACCES (6.1 isolates hugetlb pages by their head only)", ret, statusname(s1));
	if (kernel_at_least(6, 12))
		CHECK(ret == 0 && s1 == A, "move_pages by a tail address returned %ld, status %s, expected 0 and node %d "
		      "(6.12 moves the folio of any address)", ret, statusname(s1), A);
	/* Only the huge page holding the address moves (or none); the other stays on B. */
	expect_on_node("after move_pages by a tail address: its huge page", 0, p, NP / K, s1 == A ? A : B);
	expect_on_node("after move_pages by a tail address: the other huge page", 0, p + HPAGE, NP / K, B);
	check_pattern("after move_pages by a tail address", p, 0, NP, 61);
	if (s1 == A) { /* a kernel that moves by any address: put it back */
		back = B;
		sys_move_pages(0, 1, &tail, &back, &s1, MPOL_MF_MOVE);
	}

	/* 3. mbind back to A, whose pool has K free pages again. */
	unsigned long maskA[2];
	nodemask_of(maskA, A);
	struct trace_mark t1 = trace_mark(REASON_MBIND);
	ret = sys_mbind(p, K * HPAGE, MPOL_BIND, maskA, MAXNODE, MPOL_MF_MOVE | MPOL_MF_STRICT);
	CHECK(ret == 0, "mbind(BIND{%d}, MOVE|STRICT) of the huge pages returned %ld (%s), expected 0", A, ret,
	      errname(errno));
	expect_huge_on("huge pages moved back by mbind", p, K, A);
	expect_trace("mbind of the huge pages", REASON_MBIND, t1, NP, NP, 0);
	expect_pools("after mbind back into A's pool", p0);

	/* 4. B's pool emptied: the pages move into fresh huge pages, and the pool follows them. */
	hugepages_set(B, used_b);
	struct pools p1 = pools_now();
	for (int i = 0; i < K; i++)
		to[i] = B, st[i] = STATUS_UNSET;
	ret = sys_move_pages(0, K, heads, to, st, MPOL_MF_MOVE);
	CHECK(ret == 0 && st[0] == B && st[1] == B, "move_pages(huge pages -> %d, no free huge page there) returned "
	      "%ld (%s), statuses %s %s, expected 0, node %d (a fresh huge page)", B, ret, errname(ret ? errno : 0),
	      statusname(st[0]), statusname(st[1]), B);
	expect_huge_on("huge pages moved to a node without free huge pages", p, K, B);
	w = p1;
	w.nr[0] -= K, w.nr[1] += K;
	expect_pools("after the move into fresh huge pages (A's pool shrank, B's grew)", w);

	munmap(p, K * HPAGE);
	return PASS;
}
