/*
 * migrate_suite: the guest workload of the migrate-harness (see README.md here).
 *
 * Runs page-migration test cases (move_pages(2), migrate_pages(2), mbind(2), swap,
 * THP, ...) and prints KTAP v1 on stdout. Each case runs in a forked process of its
 * own (its own process group) under a deadline; a case that overruns it is killed
 * and reported "not ok". Usage: migrate_suite [CASE_NAME]   (one case; the others are
 * reported "# SKIP not selected"), or migrate_suite --list (the case names, one per line).
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

static const struct tcase cases[] = {
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
};
#define NCASES ((int)(sizeof(cases) / sizeof(cases[0])))

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
		if (now_s() > end) {
			diag("FAIL: case did not finish within %d s: killed (a hung migration or a lost wakeup?)",
			     c->timeout_s);
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			/* Reap it if it dies; a task stuck in the kernel may never die: move on. */
			for (int i = 0; i < 400 && waitpid(pid, &st, WNOHANG) == 0; i++)
				usleep(5000);
			return FAIL;
		}
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
	double t0 = now_s();
	int failed = 0;
	for (int i = 0; i < NCASES; i++) {
		const struct tcase *c = &cases[i];
		if (only && strcmp(only, c->name)) {
			printf("ok %d %s # SKIP not selected\n", i + 1, c->name);
			continue;
		}
		printf("# Subtest: %s\n", c->name);
		int r = run_case(c, reason);
		if (r == SKIP)
			printf("ok %d %s # SKIP %s\n", i + 1, c->name, reason[0] ? reason : "precondition missing");
		else if (r == PASS)
			printf("ok %d %s\n", i + 1, c->name);
		else {
			printf("not ok %d %s\n", i + 1, c->name);
			failed++;
		}
	}
	diag("suite: %d case(s) failed, %.1f s", failed, now_s() - t0);
	return failed ? 1 : 0;
}
