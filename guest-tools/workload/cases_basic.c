/* Cases: anon_move_pages, migrate_pages_other_process, mbind_move,
 * shared_anon_move_all, query_mode. */
#include "suite.h"

#include <fcntl.h>
#include <sys/mman.h>

static const char *policy_of(pid_t pid, void *addr)
{
	static struct numa_line nl;
	if (numa_maps_get(pid, (unsigned long)addr, &nl) < 0)
		return "(no numa_maps line)";
	return nl.policy;
}

/* ------------------------------------------------------------ anon_move_pages */

int case_anon_move_pages(void)
{
	enum { N = 128 };
	const int A = g_node_a, B = g_node_b;
	int st[N], exp[N];
	char *r = anon_pages_on(A, N, 11);
	if (!r)
		return FAIL;
	diag("%d private anonymous pages written under MPOL_BIND{%d}", N, A);
	if (expect_on_node("precondition: pages where MPOL_BIND put them", 0, r, N, A) ||
	    expect_numa_maps("precondition", 0, r, A, N))
		return FAIL;

	long long s0 = vmstat_get("pgmigrate_success");
	struct trace_mark t0 = trace_mark(REASON_SYSCALL);
	move_all_expect("move to node B", r, N, B);
	check_pattern("after move to node B", r, 0, N, 11);

	/* The new pages are really the mapping: write through it and read back. */
	fill_pattern(r, 0, N, 12);
	check_pattern("rewritten after the move", r, 0, N, 12);

	/* Alternating targets: even pages back to A, odd ones stay on B (already there:
	 * status = the node, nothing migrated); every page starts a new batch. */
	for (int i = 0; i < N; i++)
		exp[i] = (i % 2 == 0) ? A : B;
	long ret = move_region(0, r, N, exp, 0, st, MPOL_MF_MOVE);
	CHECK(ret == 0, "move_pages(alternating A/B) returned %ld (%s), expected 0", ret, errname(errno));
	check_status_array("alternating targets", st, exp, N);
	expect_statuses("after alternating move", 0, r, N, exp);
	expect_numa_split("after alternating move", 0, r, A, N / 2, B, N / 2);
	check_pattern("after alternating move", r, 0, N, 12);

	/* Everything back to A: odd pages migrate, even ones are already there. */
	move_all_expect("move back to node A", r, N, A);
	check_pattern("after move back to node A", r, 0, N, 12);

	long long ds = vmstat_get("pgmigrate_success") - s0;
	diag("pgmigrate_success grew by %lld (pages migrated: %d)", ds, 2 * N);
	CHECK(ds >= 2 * N, "pgmigrate_success grew by %lld, expected >= %d", ds, 2 * N);
	/* N, then N/2 one-page batches each way (the other half were already there). */
	expect_trace("move_pages(2) of every page, there and back", REASON_SYSCALL, t0, 2 * N, 2 * N, 0);
	unmap_region(r, N);
	return PASS;
}

/* --------------------------------------------------- migrate_pages_other_process */

int case_migrate_pages_other_process(void)
{
	enum { N = 128 };
	const int A = g_node_a, B = g_node_b;
	char *r = map_region(N, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct helper child;
	if (!r || helper_start(&child, r, N, A, 41)) /* its own private pages on A */
		return FAIL;
	pid_t pid = child.pid;
	if (expect_on_node("precondition: child's pages", pid, r, N, A))
		goto out;
	diag("child %d has %ld pages on node %d before migrate_pages", (int)pid, numa_maps_pages_on(pid, A, 0), A);

	for (int dir = 0; dir < 2; dir++) {
		int from = dir ? B : A, to = dir ? A : B;
		unsigned long old[2], new_[2];
		nodemask_of(old, from);
		nodemask_of(new_, to);
		long long s0 = vmstat_get("pgmigrate_success");
		long on_from = numa_maps_pages_on(pid, from, 0); /* every page of the child there */
		struct trace_mark t0 = trace_mark(REASON_SYSCALL);
		long ret = sys_migrate_pages(pid, MAXNODE, old, new_);
		CHECK(ret == 0, "migrate_pages(child, {%d} -> {%d}) returned %ld (%s), expected 0 (pages not moved)",
		      from, to, ret, errname(errno));
		char what[96];
		snprintf(what, sizeof(what), "child's pages after migrate_pages {%d}->{%d}", from, to);
		expect_on_node(what, pid, r, N, to);
		expect_numa_maps(what, pid, r, to, N);
		long left = numa_maps_pages_on(pid, from, 5);
		CHECK(left == 0, "%s: numa_maps of the child still counts %ld pages on node %d (the whole process "
		      "should have left it), expected 0", what, left, from);
		long long ds = vmstat_get("pgmigrate_success") - s0;
		CHECK(ds >= N, "pgmigrate_success grew by %lld, expected >= %d", ds, N);
		expect_trace(what, REASON_SYSCALL, t0, N, on_from > N ? on_from : N, 0);
		int v = helper_ask(&child, HELPER_VERIFY);
		CHECK(v == '0', "after migrate_pages {%d}->{%d} the child replied %d to 'verify your data', expected "
		      "'0' (data intact)", from, to, v);
	}
out:
	helper_quit(&child, "migrate_pages child");
	return PASS;
}

/* ---------------------------------------------------------------- mbind_move */

int case_mbind_move(void)
{
	enum { N = 64, EXTRA = 8, M = 32, PIN = 5 };
	const int A = g_node_a, B = g_node_b;
	unsigned long maskB[2];
	nodemask_of(maskB, B);
	char *r = map_region(N + EXTRA, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!r)
		return FAIL;
	bind_task_to(A);
	fill_pattern(r, 0, N, 21);
	bind_task_to(-1);
	if (expect_on_node("precondition", 0, r, N, A))
		return FAIL;

	/* (a) MPOL_MF_STRICT alone, pages on the wrong node: EIO, nothing moves and the
	 * policy is not installed. */
	long ret = sys_mbind(r, (N + EXTRA) * PAGE, MPOL_BIND, maskB, MAXNODE, MPOL_MF_STRICT);
	CHECK(ret == -1 && errno == EIO, "mbind(BIND{%d}, STRICT) on misplaced pages returned %ld (%s), expected EIO",
	      B, ret, errname(ret ? errno : 0));
	expect_on_node("after mbind(STRICT) without MOVE", 0, r, N, A);
	const char *pol = policy_of(0, r);
	CHECK(!strcmp(pol, "default"), "after the failed mbind(STRICT) numa_maps shows policy '%s', expected 'default'",
	      pol);

	/* (b) MOVE|STRICT: every page moves, policy installed. */
	long long s0 = vmstat_get("pgmigrate_success");
	struct trace_mark t0 = trace_mark(REASON_MBIND);
	ret = sys_mbind(r, (N + EXTRA) * PAGE, MPOL_BIND, maskB, MAXNODE, MPOL_MF_MOVE | MPOL_MF_STRICT);
	CHECK(ret == 0, "mbind(BIND{%d}, MOVE|STRICT) returned %ld (%s), expected 0", B, ret, errname(errno));
	expect_on_node("after mbind(MOVE|STRICT)", 0, r, N, B);
	char want[32];
	snprintf(want, sizeof(want), "bind:%d", B);
	pol = policy_of(0, r);
	CHECK(!strcmp(pol, want), "numa_maps policy is '%s', expected '%s'", pol, want);
	check_pattern("after mbind(MOVE|STRICT)", r, 0, N, 21);
	long long ds = vmstat_get("pgmigrate_success") - s0;
	CHECK(ds >= N, "pgmigrate_success grew by %lld, expected >= %d", ds, N);
	/* Pages first touched now follow the policy, even from node A's CPUs. */
	run_on_node_cpus(A);
	fill_pattern(r, N, EXTRA, 22);
	run_on_node_cpus(-1);
	expect_on_node("pages first touched after mbind (running on node A's CPUs)", 0, r + N * PAGE, EXTRA, B);
	expect_numa_maps("whole VMA after mbind", 0, r, B, N + EXTRA);
	check_pattern("new pages", r, N, EXTRA, 22);
	unmap_region(r, N + EXTRA);

	/* (c) one page pinned by a pipe (vmsplice): it cannot be migrated. */
	char *q = anon_pages_on(A, M, 23);
	if (!q)
		return FAIL;
	if (expect_on_node("precondition (pin)", 0, q, M, A))
		return FAIL;
	int pipefd[2];
	if (pin_page_in_pipe(q + PIN * PAGE, pipefd))
		return FAIL;
	struct isolated iso0 = isolated_now();
	long long f0 = vmstat_get("pgmigrate_fail");
	int exp[M];
	for (int i = 0; i < M; i++)
		exp[i] = i == PIN ? A : B;
	ret = sys_mbind(q, M * PAGE, MPOL_BIND, maskB, MAXNODE, MPOL_MF_MOVE | MPOL_MF_STRICT);
	CHECK(ret == -1 && errno == EIO,
	      "mbind(MOVE|STRICT) with a pinned page returned %ld (%s), expected EIO (a page could not be moved)", ret,
	      errname(ret ? errno : 0));
	expect_statuses("after mbind(MOVE|STRICT) with a pinned page: others moved, pinned one stayed", 0, q, M, exp);
	long long df = vmstat_get("pgmigrate_fail") - f0;
	CHECK(df >= 1, "pgmigrate_fail grew by %lld, expected >= 1", df);
	/* Without STRICT the failure is silent. */
	ret = sys_mbind(q, M * PAGE, MPOL_BIND, maskB, MAXNODE, MPOL_MF_MOVE);
	CHECK(ret == 0, "mbind(MOVE) without STRICT, pinned page, returned %ld (%s), expected 0", ret,
	      errname(errno));
	expect_statuses("after mbind(MOVE) with a pinned page", 0, q, M, exp);
	/* The pinned page is still the mapped page: writes show through the pipe. */
	fill_pattern(q, PIN, 1, 24);
	check_pattern("pinned page rewritten", q, PIN, 1, 24);
	unpin_pipe_expect(pipefd, q + PIN * PAGE, "pinned page after the refused moves");
	ret = sys_mbind(q, M * PAGE, MPOL_BIND, maskB, MAXNODE, MPOL_MF_MOVE | MPOL_MF_STRICT);
	CHECK(ret == 0, "mbind(MOVE|STRICT) after unpinning returned %ld (%s), expected 0", ret, errname(errno));
	expect_on_node("after unpinning and mbind again", 0, q, M, B);
	/* (b) N; (c) M-1 and the pinned page failed, the pinned page failed again (the
	 * others were on B already), then the unpinned page. */
	expect_trace("mbind(2) moves", REASON_MBIND, t0, N + M, N + M, 2);
	check_pattern("after unpin+mbind (pages before the pinned one)", q, 0, PIN, 23);
	check_pattern("after unpin+mbind (the formerly pinned page)", q, PIN, 1, 24);
	check_pattern("after unpin+mbind (pages after it)", q, PIN + 1, M - PIN - 1, 23);
	expect_isolated_back("after the moves with a pinned page", iso0);
	unmap_region(q, M);
	return PASS;
}

/* ------------------------------------------------------- shared_anon_move_all */

int case_shared_anon_move_all(void)
{
	enum { N = 32 };
	const int A = g_node_a, B = g_node_b;
	int st[N], exp[N];
	char *r = map_region(N, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (!r)
		return FAIL;
	bind_task_to(A);
	fill_pattern(r, 0, N, 31);
	bind_task_to(-1);
	struct helper child; /* maps every page too: mapcount 2 */
	if (helper_start(&child, r, N, -1, 31))
		return FAIL;
	pid_t pid = child.pid;
	if (expect_on_node("precondition (parent)", 0, r, N, A) || expect_on_node("precondition (child)", pid, r, N, A))
		goto out;

	/* Without MPOL_MF_MOVE_ALL a page mapped by two processes is not moved: -EACCES. */
	long ret = move_region(0, r, N, NULL, B, st, MPOL_MF_MOVE);
	CHECK(ret == 0, "move_pages(shared pages, MOVE) returned %ld (%s), expected 0", ret, errname(errno));
	for (int i = 0; i < N; i++)
		exp[i] = -EACCES;
	check_status_array("shared pages without MOVE_ALL", st, exp, N);
	expect_on_node("shared pages after move_pages without MOVE_ALL", 0, r, N, A);
	expect_numa_maps("shared pages after move_pages without MOVE_ALL", 0, r, A, N);

	/* With it (we are root: CAP_SYS_NICE) they move, for both processes. */
	long long s0 = vmstat_get("pgmigrate_success");
	ret = move_region(0, r, N, NULL, B, st, MPOL_MF_MOVE_ALL);
	CHECK(ret == 0, "move_pages(shared pages, MOVE_ALL) returned %ld (%s), expected 0", ret, errname(errno));
	for (int i = 0; i < N; i++)
		exp[i] = B;
	check_status_array("shared pages with MOVE_ALL", st, exp, N);
	expect_on_node("shared pages after MOVE_ALL (parent's view)", 0, r, N, B);
	expect_on_node("shared pages after MOVE_ALL (child's view)", pid, r, N, B);
	expect_numa_maps("parent's numa_maps after MOVE_ALL", 0, r, B, N);
	expect_numa_maps("child's numa_maps after MOVE_ALL", pid, r, B, N);
	long long ds = vmstat_get("pgmigrate_success") - s0;
	CHECK(ds >= N, "pgmigrate_success grew by %lld, expected >= %d", ds, N);
	check_pattern("parent reads the shared pages after MOVE_ALL", r, 0, N, 31);
	CHECK(helper_ask(&child, HELPER_VERIFY) == '0', "child found the shared pages corrupted after MOVE_ALL, "
	      "expected them intact");
	/* Still shared after migration: the child's writes are seen by the parent. */
	CHECK(helper_ask(&child, HELPER_REWRITE) == '0', "child could not rewrite the shared pages (expected reply "
	      "'0')");
	check_pattern("parent reads what the child wrote after the migration", r, 0, N, 32);

	/* mbind(MOVE|STRICT) skips pages shared with another process, and (6.1 and 6.12
	 * alike, unlike what mbind(2) says) does not count them as failures: 0, nothing moves. */
	unsigned long maskA[2];
	nodemask_of(maskA, A);
	ret = sys_mbind(r, N * PAGE, MPOL_BIND, maskA, MAXNODE, MPOL_MF_MOVE | MPOL_MF_STRICT);
	CHECK(ret == 0, "mbind(BIND{%d}, MOVE|STRICT) on shared pages returned %ld (%s), expected 0 (shared pages are "
	      "skipped, not failures)", A, ret, errname(ret ? errno : 0));
	expect_on_node("shared pages after mbind(MOVE) without MOVE_ALL", 0, r, N, B);
	ret = sys_mbind(r, N * PAGE, MPOL_BIND, maskA, MAXNODE, MPOL_MF_MOVE_ALL | MPOL_MF_STRICT);
	CHECK(ret == 0, "mbind(BIND{%d}, MOVE_ALL|STRICT) returned %ld (%s), expected 0", A, ret, errname(errno));
	expect_on_node("shared pages after mbind(MOVE_ALL) (parent's view)", 0, r, N, A);
	expect_on_node("shared pages after mbind(MOVE_ALL) (child's view)", pid, r, N, A);
	CHECK(helper_ask(&child, HELPER_VERIFY) == '0', "child found the shared pages corrupted after "
	      "mbind(MOVE_ALL), expected them intact");
	check_pattern("parent after mbind(MOVE_ALL)", r, 0, N, 32);
out:
	helper_quit(&child, "sharing child");
	return PASS;
}

/* ---------------------------------------------------------------- query_mode */

int case_query_mode(void)
{
	enum { N = 24, F = 8 };
	const int A = g_node_a, B = g_node_b;
	/* Never-touched anonymous pages: 6.1 looks them up with follow_page(FOLL_DUMP),
	 * which says -EFAULT for anonymous memory without a page; from 6.12 on
	 * (folio_walk) the answer is -ENOENT, as move_pages(2) documents. */
	const int untouched = kernel_at_least(6, 12) ? -ENOENT : -EFAULT;
	diag("kernel %d.%d: expecting %s for never-touched anonymous pages", g_kver_major, g_kver_minor,
	     statusname(untouched));
	int st[N + F], exp[N + F];
	char *r = map_region(N, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!r)
		return FAIL;
	/* kinds by index (crossing the kernel's 16-entry chunk): 0 on A, 1 on B, 2 zero page, 3 untouched */
	for (int pass = 0; pass < 2; pass++) {
		bind_task_to(pass ? B : A);
		for (int i = 0; i < N; i++)
			if (i % 4 == pass)
				fill_pattern(r, i, 1, 61);
	}
	bind_task_to(-1);
	for (int i = 0; i < N; i++)
		if (i % 4 == 2)
			touch_read(r + i * PAGE, 1); /* maps the shared zero page */
	for (int i = 0; i < N; i++)
		exp[i] = (int[]){ A, B, -EFAULT, untouched }[i % 4];
	expect_statuses("query of present/zero/untouched pages", 0, r, N, exp);
	expect_numa_split("numa_maps of the same VMA", 0, r, A, N / 4, B, N / 4);

	/* An address in no VMA at all: -EFAULT on every kernel. */
	char *hole = mmap(NULL, 3 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	munmap(hole + PAGE, PAGE);
	int hs = STATUS_UNSET;
	void *hp = hole + PAGE;
	long ret = sys_move_pages(0, 1, &hp, NULL, &hs, 0);
	CHECK(ret == 0 && hs == -EFAULT, "query of an unmapped address: ret %ld, status %s, expected 0 / -EFAULT", ret,
	      statusname(hs));
	ret = sys_move_pages(0, 1, &hp, (int[]){ B }, &hs, MPOL_MF_MOVE);
	CHECK(ret == 0 && hs == -EFAULT, "move of an unmapped address: ret %ld, status %s, expected 0 / -EFAULT", ret,
	      statusname(hs));
	munmap(hole, 3 * PAGE);

	/* Moving zero-page and untouched pages: nothing to move, same statuses, no page
	 * gets allocated. */
	int tgt[N];
	for (int i = 0; i < N; i++)
		tgt[i] = (i % 4 == 0) ? A : (i % 4 == 1) ? B : B;
	ret = move_region(0, r, N, tgt, 0, st, MPOL_MF_MOVE);
	CHECK(ret == 0, "move_pages(mixed, to where they are / absent) returned %ld (%s), expected 0", ret,
	      errname(errno));
	check_status_array("move_pages statuses of present/zero/untouched pages", st, exp, N);
	expect_statuses("query after that move", 0, r, N, exp);
	expect_numa_split("numa_maps after that move", 0, r, A, N / 4, B, N / 4);
	for (int i = 0; i < N; i += 4)
		check_pattern("present pages", r, i, 2, 61);

	/* File pages in the page cache but not mapped by this process: -ENOENT on both. */
	char path[64];
	snprintf(path, sizeof(path), "/tmp/migrate_suite_q.%d", (int)getpid());
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		failf("open %s: %s, expected success", path, errname(errno));
		return FAIL;
	}
	unlink(path);
	char *buf = malloc(F * PAGE);
	fill_pattern(buf, 0, F, 62);
	bind_task_to(A);
	CHECK(pwrite(fd, buf, F * PAGE, 0) == (ssize_t)(F * PAGE), "pwrite: %s, expected the whole buffer written", errname(errno));
	bind_task_to(-1);
	char *m = map_region(F, MAP_SHARED, fd, 0);
	if (!m)
		return FAIL;
	/* Pure write faults (the same data stored again, without reading first): a read
	 * fault would also map the neighbouring cached pages (fault-around), a shared write
	 * fault maps just its page. */
	for (int i = 0; i < F / 2; i++)
		*(volatile uint64_t *)(m + i * PAGE) = pattern_word(62, i, 0);
	for (int i = 0; i < F; i++)
		exp[i] = i < F / 2 ? A : -ENOENT;
	expect_statuses("tmpfs file: mapped pages / cached but never faulted pages", 0, m, F, exp);
	check_pattern("tmpfs file pages", m, 0, F, 62);
	unmap_region(m, F);
	close(fd);
	free(buf);
	unmap_region(r, N);
	return PASS;
}
