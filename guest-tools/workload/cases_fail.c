/* Cases: unmovable_page, migration_counters, permissions_unprivileged, bad_args. */
#include "suite.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* ------------------------------------------------------------- unmovable_page */

int case_unmovable_page(void)
{
	enum { G = 8, P = 2 * G, N = 2 * G + 1 }; /* pages 0..7 on A, 8..15 on B, 16 pinned on A */
	const int A = g_node_a, B = g_node_b;
	int st[N], exp[N], tgt[N];
	char *r = map_region(N, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!r)
		return FAIL;
	bind_task_to(A);
	fill_pattern(r, 0, G, 91);
	fill_pattern(r, P, 1, 91);
	bind_task_to(B);
	fill_pattern(r, G, G, 91);
	bind_task_to(-1);
	for (int i = 0; i < N; i++)
		exp[i] = (i >= G && i < P) ? B : A;
	if (expect_statuses("precondition", 0, r, N, exp))
		return FAIL;
	int pipefd[2];
	if (pin_page_in_pipe(r + P * PAGE, pipefd))
		return FAIL;
	struct isolated iso0 = isolated_now();
	long long f0 = vmstat_get("pgmigrate_fail"), s0 = vmstat_get("pgmigrate_success");

	/* Call 1: [0..7 -> B] [8..15 -> A] [16 (pinned) -> B]: three batches. The first two
	 * migrate and get their status; the last fails: return value 1 = pages not migrated,
	 * and the kernel leaves the failed batch's status unwritten (6.1 and 6.12 alike:
	 * move_pages_and_store_status() returns before store_status()). */
	for (int i = 0; i < N; i++)
		tgt[i] = (i >= G && i < P) ? A : B;
	long ret = move_region(0, r, N, tgt, 0, st, MPOL_MF_MOVE);
	diag("call 1 (three batches, pinned page last): returned %ld", ret);
	CHECK(ret == 1, "move_pages returned %ld (%s), expected 1 (the pinned page was not migrated)", ret,
	      errname(ret < 0 ? errno : 0));
	for (int i = 0; i < N; i++)
		exp[i] = i == P ? STATUS_UNSET : tgt[i];
	check_status_array("call 1 statuses", st, exp, N);
	for (int i = 0; i < N; i++)
		exp[i] = i == P ? A : tgt[i];
	expect_statuses("call 1: the other pages moved, the pinned one stayed", 0, r, N, exp);
	long long df = vmstat_get("pgmigrate_fail") - f0, ds = vmstat_get("pgmigrate_success") - s0;
	diag("pgmigrate_fail +%lld, pgmigrate_success +%lld", df, ds);
	CHECK(df >= 1, "pgmigrate_fail grew by %lld, expected >= 1", df);
	CHECK(ds >= 2 * G, "pgmigrate_success grew by %lld, expected >= %d", ds, 2 * G);

	/* The pinned page is still usable. */
	check_pattern("pinned page after the failed migration", r, P, 1, 91);
	fill_pattern(r, P, 1, 92);
	check_pattern("pinned page rewritten", r, P, 1, 92);

	/* Call 2: one batch, pinned page in the middle: [8,9,10,11,16,12,13,14,15] -> B. All
	 * but the pinned page migrate; return 1; no status written. */
	{
		void *pages[9];
		int nodes[9], s[9], k = 0;
		int order[9] = { 8, 9, 10, 11, P, 12, 13, 14, 15 };
		for (k = 0; k < 9; k++) {
			pages[k] = r + order[k] * PAGE;
			nodes[k] = B;
			s[k] = STATUS_UNSET;
		}
		ret = sys_move_pages(0, 9, pages, nodes, s, MPOL_MF_MOVE);
		diag("call 2 (one batch, pinned page in the middle): returned %ld", ret);
		CHECK(ret == 1, "call 2 returned %ld (%s), expected 1", ret, errname(ret < 0 ? errno : 0));
		int se[9];
		for (k = 0; k < 9; k++)
			se[k] = STATUS_UNSET;
		check_status_array("call 2 statuses (failed batch: none written)", s, se, 9);
		for (int i = 0; i < N; i++)
			exp[i] = i == P ? A : B;
		expect_statuses("call 2: the batch moved except the pinned page", 0, r, N, exp);
	}

	/* Call 3: the failing batch first: [16 -> B] [0..3 -> A]. migrate_pages() fails
	 * for the first batch and move_pages gives up: return 1 + 4 not attempted = 5. */
	{
		void *pages[5] = { r + P * PAGE, r, r + PAGE, r + 2 * PAGE, r + 3 * PAGE };
		int nodes[5] = { B, A, A, A, A }, s[5], se[5];
		for (int k = 0; k < 5; k++)
			s[k] = se[k] = STATUS_UNSET;
		ret = sys_move_pages(0, 5, pages, nodes, s, MPOL_MF_MOVE);
		diag("call 3 (failing batch first, then 4 pages to another node): returned %ld", ret);
		CHECK(ret == 5, "call 3 returned %ld (%s), expected 5 (1 failed + 4 never attempted)", ret,
		      errname(ret < 0 ? errno : 0));
		check_status_array("call 3 statuses", s, se, 5);
		for (int i = 0; i < N; i++)
			exp[i] = i == P ? A : B;
		expect_statuses("call 3: nothing moved", 0, r, N, exp);
	}
	expect_isolated_back("after the failed migrations", iso0);

	/* The pipe still holds the very page we map (writes went to it) ... */
	unpin_pipe_expect(pipefd, r + P * PAGE, "after the failed migrations");
	/* ... and once unpinned, the page moves. */
	int s1 = STATUS_UNSET, to = B;
	void *pp = r + P * PAGE;
	ret = sys_move_pages(0, 1, &pp, &to, &s1, MPOL_MF_MOVE);
	CHECK(ret == 0 && s1 == B, "move of the unpinned page: ret %ld, status %s, expected 0 / node %d", ret,
	      statusname(s1), B);
	expect_on_node("all pages", 0, r, N, B);
	check_pattern("pages 0..15 at the end", r, 0, P, 91);
	check_pattern("formerly pinned page at the end", r, P, 1, 92);
	expect_isolated_back("at the end", iso0);
	unmap_region(r, N);
	return PASS;
}

/* --------------------------------------------------------- migration_counters */

int case_migration_counters(void)
{
	enum { N = 64, PIN1 = 10, PIN2 = 40 };
	const int A = g_node_a, B = g_node_b;
	int st[N], exp[N];
	char *r = anon_pages_on(A, N, 101);
	if (!r)
		return FAIL;
	if (expect_on_node("precondition", 0, r, N, A))
		return FAIL;

	/* Exact deltas: other migrations in the guest (compaction) could only add to them,
	 * so an attempt that is off by excess is retried; a shortfall fails at once. */
	int on = A, exact = 0;
	for (int t = 0; t < 3 && !exact; t++) {
		int to = on == A ? B : A;
		long long s0 = vmstat_get("pgmigrate_success"), f0 = vmstat_get("pgmigrate_fail");
		long ret = move_region(0, r, N, NULL, to, st, MPOL_MF_MOVE);
		long long ds = vmstat_get("pgmigrate_success") - s0, df = vmstat_get("pgmigrate_fail") - f0;
		diag("moved %d pages to node %d: ret %ld, pgmigrate_success +%lld, pgmigrate_fail +%lld", N, to, ret, ds,
		     df);
		on = to;
		if (ret != 0) {
			failf("move_pages returned %ld (%s), expected 0", ret, errname(errno));
			break;
		}
		if (ds < N) {
			failf("pgmigrate_success grew by %lld for %d migrated pages, expected >= %d", ds, N, N);
			break;
		}
		exact = ds == N && df == 0;
	}
	CHECK(exact, "no attempt saw exactly the expected pgmigrate_success +%d / pgmigrate_fail +0 (3 attempts)", N);
	expect_on_node("after the counted moves", 0, r, N, on);
	check_pattern("after the counted moves", r, 0, N, 101);

	/* Two pinned pages: 2 failures, N-2 successes. */
	int p1[2], p2[2];
	if (pin_page_in_pipe(r + PIN1 * PAGE, p1) || pin_page_in_pipe(r + PIN2 * PAGE, p2))
		return FAIL;
	int pinned_on = on;
	exact = 0;
	for (int t = 0; t < 3 && !exact; t++) {
		int to = pinned_on == A ? B : A;
		if (t) /* put the others back with the pinned ones (not measured) */
			move_region(0, r, N, NULL, pinned_on, st, MPOL_MF_MOVE);
		long long s0 = vmstat_get("pgmigrate_success"), f0 = vmstat_get("pgmigrate_fail");
		long ret = move_region(0, r, N, NULL, to, st, MPOL_MF_MOVE);
		long long ds = vmstat_get("pgmigrate_success") - s0, df = vmstat_get("pgmigrate_fail") - f0;
		diag("%d pages (2 pinned) to node %d: ret %ld, pgmigrate_success +%lld, pgmigrate_fail +%lld", N, to, ret,
		     ds, df);
		if (ret != 2) {
			failf("move_pages with 2 pinned pages returned %ld (%s), expected 2", ret, errname(ret < 0 ? errno : 0));
			break;
		}
		for (int i = 0; i < N; i++)
			exp[i] = (i == PIN1 || i == PIN2) ? pinned_on : to;
		if (expect_statuses("2 pinned pages", 0, r, N, exp))
			break;
		if (ds < N - 2 || df < 2) {
			failf("pgmigrate_success +%lld / pgmigrate_fail +%lld, expected +%d / +2", ds, df, N - 2);
			break;
		}
		exact = ds == N - 2 && df == 2;
	}
	CHECK(exact, "no attempt saw exactly the expected pgmigrate_success +%d / pgmigrate_fail +2 (3 attempts)", N - 2);
	unpin_pipe_expect(p1, r + PIN1 * PAGE, "first pinned page");
	unpin_pipe_expect(p2, r + PIN2 * PAGE, "second pinned page");
	check_pattern("at the end", r, 0, N, 101);
	unmap_region(r, N);
	return PASS;
}

/* --------------------------------------------------- permissions_unprivileged */

#define EXPECT_ERR(call, err, ...)                                                                         \
	do {                                                                                                   \
		errno = 0;                                                                                         \
		long r_ = (call);                                                                                  \
		int e_ = errno;                                                                                    \
		if (!(r_ == -1 && e_ == (err))) {                                                                  \
			char m_[512];                                                                                  \
			snprintf(m_, sizeof(m_), __VA_ARGS__);                                                         \
			failf("%s: returned %ld (%s), expected -1 / %s", m_, r_, r_ == -1 ? errname(e_) : "no error",  \
			      errname(err));                                                                           \
		}                                                                                                  \
	} while (0)

static void unprivileged_checks(pid_t root_pid, char *root_region)
{
	enum { N = 8 };
	const int A = g_node_a, B = g_node_b;
	unsigned long mA[2], mB[2], mBad[2];
	nodemask_of(mA, A);
	nodemask_of(mB, B);
	int st[N], exp[N];
	char *u = map_region(N, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!u || become_nobody())
		return;
	bind_task_to(A);
	fill_pattern(u, 0, N, 112);
	bind_task_to(-1);
	diag("unprivileged (uid %d): checks", (int)getuid());

	/* Another user's process. */
	EXPECT_ERR(sys_migrate_pages(root_pid, MAXNODE, mA, mB), EPERM, "migrate_pages(root's process)");
	EXPECT_ERR(query_pages(root_pid, root_region, N, st), EPERM, "move_pages(root's process, query)");
	EXPECT_ERR(move_region(root_pid, root_region, N, NULL, B, st, MPOL_MF_MOVE), EPERM,
	           "move_pages(root's process, MOVE)");
	/* MPOL_MF_MOVE_ALL needs CAP_SYS_NICE, even on one's own pages. */
	EXPECT_ERR(move_region(0, u, N, NULL, B, st, MPOL_MF_MOVE_ALL), EPERM, "move_pages(own pages, MOVE_ALL)");
	EXPECT_ERR(sys_mbind(u, N * PAGE, MPOL_BIND, mB, MAXNODE, MPOL_MF_MOVE_ALL), EPERM, "mbind(own pages, MOVE_ALL)");
	expect_on_node("own pages after the refused calls", 0, u, N, A);
	/* A target node outside the task's allowed nodes needs CAP_SYS_NICE. */
	int bad = 5;
	nodemask_of(mBad, bad);
	EXPECT_ERR(sys_migrate_pages(0, MAXNODE, mA, mBad), EPERM, "migrate_pages(self, {%d} -> {%d}) unprivileged", A,
	           bad);

	/* What an unprivileged user may do: its own pages ... */
	long ret = move_region(0, u, N, NULL, B, st, MPOL_MF_MOVE);
	for (int i = 0; i < N; i++)
		exp[i] = B;
	CHECK(ret == 0, "unprivileged move_pages(own pages, MOVE) returned %ld (%s), expected 0", ret, errname(errno));
	check_status_array("unprivileged move_pages", st, exp, N);
	expect_on_node("own pages after unprivileged move_pages", 0, u, N, B);
	ret = sys_migrate_pages(0, MAXNODE, mB, mA);
	CHECK(ret == 0, "unprivileged migrate_pages(self, {%d} -> {%d}) returned %ld (%s), expected 0", B, A, ret,
	      errname(errno));
	expect_on_node("own pages after unprivileged migrate_pages", 0, u, N, A);
	check_pattern("own pages", u, 0, N, 112);

	/* ... and a same-user (dumpable) process's pages. */
	char *vr = map_region(N, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct helper v;
	if (vr && helper_start(&v, vr, N, A, 113) == 0) {
		ret = sys_migrate_pages(v.pid, MAXNODE, mA, mB);
		CHECK(ret == 0, "migrate_pages(same-user process, {%d} -> {%d}) returned %ld (%s), expected 0", A, B, ret,
		      errname(errno));
		expect_on_node("same-user process's pages after migrate_pages", v.pid, vr, N, B);
		CHECK(helper_ask(&v, HELPER_VERIFY) == '0', "same-user process found its data corrupted, expected it "
		      "intact");
		helper_quit(&v, "same-user holder");
	}
}

int case_permissions_unprivileged(void)
{
	enum { N = 8 };
	const int A = g_node_a;
	if (getuid() != 0)
		return skip("must start as root to switch to uid %d", NOBODY);
	char *tr = map_region(N, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct helper holder;
	if (!tr || helper_start(&holder, tr, N, A, 111))
		return FAIL;
	pid_t t = holder.pid;
	if (expect_on_node("precondition: root-owned process's pages", t, tr, N, A))
		goto out;
	fflush(stdout);
	pid_t u = fork();
	if (u == 0) {
		unprivileged_checks(t, tr);
		fflush(stdout);
		_exit(g_failures ? 1 : 0);
	}
	int code = wait_child(u, 20, "unprivileged process");
	CHECK(code == 0, "the unprivileged process exited with %d, expected 0 (1: its checks failed)", code);
	expect_on_node("root-owned process's pages after the refused calls", t, tr, N, A);
	CHECK(helper_ask(&holder, HELPER_VERIFY) == '0', "root-owned process found its data corrupted, expected it "
	      "intact");
out:
	helper_quit(&holder, "root-owned holder");
	return PASS;
}

/* ----------------------------------------------------------------- bad_args */

int case_bad_args(void)
{
	enum { N = 4 };
	const int A = g_node_a, B = g_node_b;
	int st[N];
	char *r = anon_pages_on(A, N, 121);
	if (!r)
		return FAIL;
	/* A node id that exists in no form: not online, no memory. */
	int bad = 5;
	struct stat sb;
	char path[64];
	snprintf(path, sizeof(path), "/sys/devices/system/node/node%d", bad);
	if (stat(path, &sb) == 0)
		return skip("node %d exists here: pick another machine layout", bad);
	unsigned long mA[2], mB[2], mBad[2], mEmpty[2] = { 0, 0 };
	nodemask_of(mA, A);
	nodemask_of(mB, B);
	nodemask_of(mBad, bad);
	void *p = r;

	/* move_pages: a target node without memory / out of range: the whole call fails
	 * with ENODEV before anything is moved or any status is written. */
	int targets[] = { bad, -1, 4096 };
	for (size_t k = 0; k < sizeof(targets) / sizeof(targets[0]); k++) {
		int s = STATUS_UNSET;
		EXPECT_ERR(sys_move_pages(0, 1, &p, &targets[k], &s, MPOL_MF_MOVE), ENODEV, "move_pages(node %d)",
		           targets[k]);
		CHECK(s == STATUS_UNSET, "move_pages(node %d) wrote status %s, expected it unwritten", targets[k], statusname(s));
	}
	/* Unknown flags. */
	EXPECT_ERR(move_region(0, r, N, NULL, B, st, 0x10), EINVAL, "move_pages(flags 0x10)");
	EXPECT_ERR(move_region(0, r, N, NULL, B, st, MPOL_MF_STRICT), EINVAL, "move_pages(flags MPOL_MF_STRICT)");
	EXPECT_ERR(sys_move_pages(0, 1, &p, NULL, st, 0x10), EINVAL, "move_pages(query, flags 0x10)");

	/* A pid that does not exist (a reaped child's). */
	pid_t dead = fork();
	if (dead == 0)
		_exit(0);
	waitpid(dead, NULL, 0);
	if (kill(dead, 0) == 0 || errno != ESRCH)
		diag("pid %d was reused already; ESRCH checks may be off", (int)dead);
	EXPECT_ERR(query_pages(dead, r, N, st), ESRCH, "move_pages(dead pid %d, query)", (int)dead);
	EXPECT_ERR(move_region(dead, r, N, NULL, B, st, MPOL_MF_MOVE), ESRCH, "move_pages(dead pid %d)", (int)dead);
	EXPECT_ERR(sys_migrate_pages(dead, MAXNODE, mA, mB), ESRCH, "migrate_pages(dead pid %d)", (int)dead);

	/* migrate_pages to a node without memory: with CAP_SYS_NICE the permission check
	 * passes, then new_nodes & allowed is empty: EINVAL (6.1 and 6.12). */
	EXPECT_ERR(sys_migrate_pages(0, MAXNODE, mA, mBad), EINVAL, "migrate_pages(self, {%d} -> {%d}) as root", A, bad);
	/* A node mask with bits beyond MAX_NUMNODES set: EINVAL. */
	unsigned long big[4] = { 0, 0, 0, 0 };
	big[0] = mA[0];
	big[1] = 1UL << 36; /* node 100 */
	EXPECT_ERR(sys_migrate_pages(0, 4 * 64 + 1, big, big), EINVAL, "migrate_pages(node 100 in a 256-bit mask)");

	/* mbind / set_mempolicy. */
	EXPECT_ERR(sys_mbind(r, N * PAGE, MPOL_BIND, mBad, MAXNODE, MPOL_MF_MOVE), EINVAL, "mbind(BIND {%d})", bad);
	EXPECT_ERR(sys_mbind(r, N * PAGE, MPOL_BIND, mEmpty, MAXNODE, MPOL_MF_MOVE), EINVAL, "mbind(BIND {})");
	EXPECT_ERR(sys_mbind(r, N * PAGE, MPOL_BIND, mB, MAXNODE, 1 << 5), EINVAL, "mbind(flags 1<<5)");
	EXPECT_ERR(sys_mbind(r, N * PAGE, 42, mB, MAXNODE, MPOL_MF_MOVE), EINVAL, "mbind(mode 42)");
	EXPECT_ERR(sys_mbind(r + 1, PAGE, MPOL_BIND, mB, MAXNODE, MPOL_MF_MOVE), EINVAL, "mbind(unaligned start)");
	EXPECT_ERR(sys_set_mempolicy(MPOL_BIND, mBad, MAXNODE), EINVAL, "set_mempolicy(BIND {%d})", bad);

	/* move_pages on an address with no mapping: per-page -EFAULT, call succeeds. */
	{
		void *hole = r + N * PAGE + PAGE; /* past the guard page */
		char *probe = mmap(hole, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (probe == hole) {
			munmap(probe, PAGE);
			int s = STATUS_UNSET, to = B;
			long ret = sys_move_pages(0, 1, &hole, &to, &s, MPOL_MF_MOVE);
			CHECK(ret == 0 && s == -EFAULT, "move_pages(unmapped address): ret %ld, status %s, expected 0 / -EFAULT",
			      ret, statusname(s));
		}
	}

	/* None of that moved anything or changed the policy. */
	expect_on_node("pages after all the refused calls", 0, r, N, A);
	struct numa_line nl;
	numa_maps_get(0, (unsigned long)r, &nl);
	CHECK(!strcmp(nl.policy, "default"), "numa_maps policy '%s' after refused mbind calls, expected 'default'",
	      nl.policy);
	int mode = -1;
	CHECK(sys_get_mempolicy(&mode, NULL, 0, NULL, 0) == 0 && mode == MPOL_DEFAULT,
	      "task policy %d after a refused set_mempolicy, expected MPOL_DEFAULT", mode);
	check_pattern("pages after the refused calls", r, 0, N, 121);
	unmap_region(r, N);
	return PASS;
}
