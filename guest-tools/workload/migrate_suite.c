/*
 * migrate_suite: the guest workload of the migrate-harness (see README.md here).
 *
 * Runs page-migration test cases (move_pages(2), migrate_pages(2), mbind(2), swap,
 * THP, ...) and prints KTAP v1 on stdout. Each case runs in a forked process of its
 * own (its own process group) under a deadline; a case that overruns it is killed
 * and reported "not ok". Usage: migrate_suite [CASE_NAME]   (one case; the others are
 * reported "# SKIP not selected"), or migrate_suite --list (the case names, one per line).
 * With --topology first, the same for the topology suite (cases that need 3+ nodes, memoryless
 * or CPU-less nodes: each row says what it needs; an unmet need is a skip naming it).
 */
#include "suite.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

struct tcase {
	const char *name;
	int (*fn)(void);
	int timeout_s;
};

static const struct tcase workload_cases[] = {
	{ "anon_move_pages", case_anon_move_pages, 30 },
	{ "migrate_pages_other_process", case_migrate_pages_other_process, 30 },
	{ "mbind_move", case_mbind_move, 30 },
	{ "shared_anon_move_all", case_shared_anon_move_all, 30 },
	{ "file_pages_tmpfs", case_file_pages_tmpfs, 30 },
	{ "file_pages_ext4", case_file_pages_ext4, 30 },
	{ "swap_pages", case_swap_pages, 40 },
	{ "thp_move", case_thp_move, 30 },
	{ "unmovable_page", case_unmovable_page, 30 },
	{ "concurrent_bounce", case_concurrent_bounce, 40 },
	{ "permissions_unprivileged", case_permissions_unprivileged, 30 },
	{ "bad_args", case_bad_args, 30 },
	{ "migration_counters", case_migration_counters, 30 },
	{ "query_mode", case_query_mode, 30 },
	{ "compaction", case_compaction, 40 },
	{ "soft_offline", case_soft_offline, 30 },
	{ "numa_balancing", case_numa_balancing, 40 },
	{ "contig_range", case_contig_range, 40 },
	{ "hugetlb_move", case_hugetlb_move, 30 },
	{ "ksm_move_all", case_ksm_move_all, 40 },
	{ "cpuset_mems", case_cpuset_mems, 30 },
	{ "kinds_x_apis", case_kinds_x_apis, 60 },
	{ "kinds_short_target", case_kinds_short_target, 90 },
};

static const struct tcase topology_cases[] = {
	{ "three_node_migrate_pages", case_three_node_migrate_pages, 30 },
	{ "memoryless_target", case_memoryless_target, 30 },
	{ "memoryless_local_alloc", case_memoryless_local_alloc, 30 },
	{ "cpuless_place_move", case_cpuless_place_move, 30 },
	{ "memory_offline", case_memory_offline, 60 },
	{ "longterm_pin", case_longterm_pin, 30 },
	{ "demotion", case_demotion, 120 },
};
/* What each topology case needs of the machine (TOPO_*), row by row. */
static const unsigned topology_needs[] = {
	TOPO_3_MEM_NODES,
	TOPO_MEMORYLESS,
	TOPO_MEMORYLESS,
	TOPO_CPULESS,
	TOPO_REMOVABLE,
	TOPO_REMOVABLE,
	TOPO_LOWER_TIER,
};

#define LEN(a) ((int)(sizeof(a) / sizeof((a)[0])))
_Static_assert(LEN(topology_cases) == LEN(topology_needs), "one need per topology case");
static const struct tcase *cases = workload_cases; /* the suite chosen */
static const unsigned *needs;                      /* its needs, or NULL: none */
static int NCASES = LEN(workload_cases);

enum { STUCK = 3 };         /* run_case(): the case is stuck in the kernel (and the exit status) */
#define KILL_GRACE_S 3.0    /* after SIGKILL, a task still alive this long is stuck in the kernel */
#define MAX_TASKS 64
static char g_stuck_in[128]; /* where the stuck case sleeps: kernel_move_pages+0x8d/0x1a0 */

/* The case overran its deadline: kill its process group; if a task of it is still alive
 * KILL_GRACE_S later (SIGKILL cannot end a task sleeping uninterruptibly in the kernel), the
 * case is stuck in the kernel: print its tasks' kernel stacks and return STUCK, else FAIL. */
static int overran(const struct tcase *c, pid_t pid)
{
	static struct task_info at_deadline[MAX_TASKS], left[MAX_TASKS];
	int nd = group_tasks(pid, at_deadline, MAX_TASKS), nl, reaped = 0, st;
	kill(-pid, SIGKILL);
	kill(pid, SIGKILL);
	double end = now_s() + KILL_GRACE_S;
	for (;;) {
		reaped |= waitpid(pid, &st, WNOHANG) == pid;
		nl = group_tasks(pid, left, MAX_TASKS);
		if ((reaped && nl == 0) || now_s() > end)
			break;
		usleep(20000);
	}
	int in_d = 0;
	for (int i = 0; i < nd; i++)
		in_d += at_deadline[i].state == 'D';
	if (nl == 0) {
		diag("FAIL: case did not finish within %d s, expected it to: killed; not stuck in the kernel (%d task(s), "
		     "%d in state D at the deadline, all gone after SIGKILL)", c->timeout_s, nd, in_d);
		return FAIL;
	}
	/* The first task in state D names the place (a helper may only wait for it). */
	int first = 0;
	for (int i = 0; i < nl; i++) {
		kernel_stack(&left[i]);
		if (left[i].state == 'D' && left[first].state != 'D')
			first = i;
	}
	snprintf(g_stuck_in, sizeof(g_stuck_in), "%s", left[first].top);
	diag("FAIL: case did not finish within %d s, expected it to; stuck in the kernel in %s: %d task(s) still alive "
	     "%.0f s after SIGKILL, expected none (%d in state D at the deadline)", c->timeout_s, g_stuck_in, nl,
	     KILL_GRACE_S, in_d);
	for (int i = 0; i < nl && i < 8; i++) {
		diag("stuck task %d (thread %d, %s), state %c, kernel stack:", (int)left[i].pid, (int)left[i].tid,
		     left[i].comm, left[i].state);
		for (char *line = left[i].stack; line && *line;) {
			char *nl_ = strchr(line, '\n');
			if (nl_)
				*nl_ = 0;
			diag("  %s", line);
			line = nl_ ? nl_ + 1 : NULL;
		}
	}
	return STUCK;
}

static int run_case(const struct tcase *c, char *reason)
{
	reason[0] = 0;
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		diag("fork: %s", errname(errno));
		return FAIL;
	}
	if (pid == 0) {
		setpgid(0, 0);
		signal(SIGPIPE, SIG_IGN);
		g_failures = 0;
		g_skip_reason = reason;
		if (g_nr_mem_nodes < 2) /* every case moves pages between two nodes */
			_exit(skip("needs 2 NUMA nodes with memory, found %d", g_nr_mem_nodes));
		if (needs && topology_unmet(needs[c - cases], reason, 256))
			_exit(SKIP);
		int r = c->fn();
		if (r == SKIP && g_failures) /* a failed check wins over a later skip */
			diag("the case then asked to skip (%s), but a check had failed: reported as a failure", reason);
		if (g_failures)
			r = FAIL;
		fflush(stdout);
		_exit(r);
	}
	setpgid(pid, pid);
	double t0 = now_s(), end = t0 + c->timeout_s;
	int st = 0;
	for (;;) {
		pid_t w = waitpid(pid, &st, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			diag("waitpid: %s", errname(errno));
			return FAIL;
		}
		if (now_s() > end)
			return overran(c, pid);
		usleep(2000);
	}
	/* Leftover helper processes of the case (should not exist): kill them. */
	kill(-pid, SIGKILL);
	diag("duration %.2f s", now_s() - t0);
	if (WIFSIGNALED(st)) {
		diag("FAIL: case process killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
		return FAIL;
	}
	int code = WEXITSTATUS(st);
	return code == PASS || code == SKIP ? code : FAIL;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	setvbuf(stderr, NULL, _IOLBF, 0);
	if (argc > 1 && !strcmp(argv[1], "--topology")) {
		cases = topology_cases;
		needs = topology_needs;
		NCASES = LEN(topology_cases);
		argv++;
		argc--;
	}
	const char *only = argc > 1 ? argv[1] : NULL;
	if (only && !strcmp(only, "--list")) {
		for (int i = 0; i < NCASES; i++)
			printf("%s\n", cases[i].name);
		return 0;
	}
	if (only) {
		int found = 0;
		for (int i = 0; i < NCASES; i++)
			found |= !strcmp(cases[i].name, only);
		if (!found) {
			fprintf(stderr, "unknown case %s; cases:", only);
			for (int i = 0; i < NCASES; i++)
				fprintf(stderr, " %s", cases[i].name);
			fprintf(stderr, "\n");
			return 2;
		}
	}
	detect_machine();
	char *reason = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (reason == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	printf("KTAP version 1\n");
	printf("1..%d\n", NCASES);
	diag("kernel %d.%d, %d memory nodes (testing nodes %d and %d), uid %d", g_kver_major, g_kver_minor,
	     g_nr_mem_nodes, g_node_a, g_node_b, (int)getuid());
	if (g_nr_mem_nodes >= 2) /* else every case skips: leave the machine's tracing alone */
		trace_setup();
	settings_init();
	double t0 = now_s();
	int failed = 0;
	for (int i = 0; i < NCASES; i++) {
		const struct tcase *c = &cases[i];
		if (only && strcmp(only, c->name)) {
			printf("ok %d %s # SKIP not selected\n", i + 1, c->name);
			continue;
		}
		printf("# Subtest: %s\n", c->name);
		trace_clear();
		int r = run_case(c, reason);
		trace_report();
		settings_restore();
		if (r == STUCK) {
			printf("not ok %d %s # TIMEOUT stuck in kernel: %s\n", i + 1, c->name, g_stuck_in);
			diag("suite stopped after case %d: a case is stuck in the kernel, the remaining %d case(s) not run "
			     "(%.1f s)", i + 1, NCASES - i - 1, now_s() - t0);
			trace_teardown();
			return STUCK;
		}
		if (r == SKIP)
			printf("ok %d %s # SKIP %s\n", i + 1, c->name, reason[0] ? reason : "precondition missing");
		else if (r == PASS)
			printf("ok %d %s\n", i + 1, c->name);
		else {
			printf("not ok %d %s\n", i + 1, c->name);
			failed++;
		}
	}
	trace_teardown();
	diag("suite: %d case(s) failed, %.1f s", failed, now_s() - t0);
	return failed ? 1 : 0;
}
