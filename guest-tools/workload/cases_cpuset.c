/* Case: cpuset_mems. A task confined by a cgroup v2 cpuset: its pages are placed on the
 * cpuset's mems whatever CPU it runs on; changing cpuset.mems migrates them (on the
 * default hierarchy memory_migrate is always on: 6.1 kernel/cgroup/cpuset.c sets
 * CS_MEMORY_MIGRATE for it; cpuset_write_resmask() waits for the migration, reason
 * MR_SYSCALL); and the task cannot move its pages out of its mems itself:
 * move_pages(2) -EACCES (do_pages_move(): node not in cpuset_mems_allowed()),
 * migrate_pages(2) EINVAL as root (the target set, masked by the cpuset, is empty),
 * mbind(2) EINVAL (mpol_set_nodemask() masks the nodes with the cpuset's). */
#include "suite.h"

#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>

#define CGROOT "/sys/fs/cgroup"

static int cgroup_v2(void)
{
	char buf[256];
	if (sysfs_read(CGROOT "/cgroup.controllers", buf, sizeof(buf))) {
		mkdir(CGROOT, 0755);
		if (mount("cgroup2", CGROOT, "cgroup2", 0, NULL) || sysfs_read(CGROOT "/cgroup.controllers", buf, sizeof(buf)))
			return -1;
	}
	if (!strstr(buf, "cpuset"))
		return -1;
	sysfs_write(CGROOT "/cgroup.subtree_control", "+cpuset");
	return 0;
}

static int write_mems(const char *dir, int node)
{
	char path[160], val[16];
	snprintf(path, sizeof(path), "%s/cpuset.mems", dir);
	snprintf(val, sizeof(val), "%d", node);
	int r = sysfs_write(path, val);
	CHECK(r == 0, "writing %s to %s: %s, expected success", val, path, errname(errno));
	return r;
}

/* The confined task: fills N pages (default policy) while running on node B's CPUs. */
enum { N = 64 };
static int confined_task(char *r, int cmd, int reply)
{
	const int A = g_node_a, B = g_node_b;
	char c;
	run_on_node_cpus(B);
	fill_pattern(r, 0, N, 51);
	if (write_full(reply, "0", 1) || read_full(cmd, &c, 1)) /* the parent changes cpuset.mems to B */
		return 1;
	check_pattern("confined task's pages after cpuset.mems changed", r, 0, N, 51);
	/* Moving its own pages out of its mems. */
	void *pg = r;
	int to = A, st = STATUS_UNSET;
	long ret = sys_move_pages(0, 1, &pg, &to, &st, MPOL_MF_MOVE);
	CHECK(ret == -1 && errno == EACCES, "move_pages(own page -> node %d outside the cpuset) returned %ld (%s), "
	      "expected EACCES", A, ret, errname(ret ? errno : 0));
	unsigned long old[2], new_[2];
	nodemask_of(old, B);
	nodemask_of(new_, A);
	ret = sys_migrate_pages(0, MAXNODE, old, new_);
	CHECK(ret == -1 && errno == EINVAL, "migrate_pages(self, {%d} -> {%d} outside the cpuset) returned %ld (%s), "
	      "expected EINVAL", B, A, ret, errname(ret ? errno : 0));
	ret = sys_mbind(r, N * PAGE, MPOL_BIND, new_, MAXNODE, MPOL_MF_MOVE);
	CHECK(ret == -1 && errno == EINVAL, "mbind(BIND{%d} outside the cpuset, MOVE) returned %ld (%s), expected EINVAL",
	      A, ret, errname(ret ? errno : 0));
	expect_on_node("confined task's pages after its own attempts to leave the cpuset", 0, r, N, B);
	check_pattern("confined task's pages at the end", r, 0, N, 51);
	return g_failures ? 1 : 0;
}

int case_cpuset_mems(void)
{
	const int A = g_node_a, B = g_node_b;
	if (cgroup_v2())
		return skip("no cgroup v2 cpuset controller (CONFIG_CPUSETS)");
	char dir[96], procs[128];
	snprintf(dir, sizeof(dir), CGROOT "/migrate_suite.%d", (int)getpid());
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", dir);
	if (setting_mkdir(dir) || write_mems(dir, A)) {
		failf("creating the cpuset %s with mems %d: %s, expected success", dir, A, errname(errno));
		return FAIL;
	}
	char *r = map_region(N, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int cmd[2], reply[2];
	if (!r || pipe(cmd) || pipe(reply))
		return FAIL;
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		char c;
		if (read_full(cmd[0], &c, 1)) /* wait to be in the cpuset */
			_exit(3);
		_exit(confined_task(r, cmd[0], reply[1]));
	}
	char val[16], c = 0;
	snprintf(val, sizeof(val), "%d", (int)pid);
	CHECK(sysfs_write(procs, val) == 0, "moving the task into %s: %s, expected success", procs, errname(errno));
	write_full(cmd[1], "g", 1);
	if (read_full(reply[0], &c, 1) || c != '0') {
		failf("the confined task did not fill its pages");
		wait_child(pid, 5, "confined task");
		return FAIL;
	}
	expect_on_node("pages of a task in a cpuset with mems A, running on B's CPUs", pid, r, N, A);
	long long s0 = vmstat_get("pgmigrate_success");
	struct trace_mark t0 = trace_mark(REASON_SYSCALL);
	write_mems(dir, B);
	expect_on_node("the task's pages after cpuset.mems changed to B", pid, r, N, B);
	long left = numa_maps_pages_on(pid, A, 3);
	CHECK(left == 0, "the task still has %ld pages on node %d after cpuset.mems changed to %d, expected 0", left, A, B);
	expect_trace("cpuset.mems changed", REASON_SYSCALL, t0, N, 1L << 40, 0);
	CHECK(vmstat_get("pgmigrate_success") - s0 >= N, "pgmigrate_success grew by %lld, expected >= %d",
	      vmstat_get("pgmigrate_success") - s0, N);
	write_full(cmd[1], "g", 1);
	int code = wait_child(pid, 10, "confined task");
	CHECK(code == 0, "the confined task exited with %d, expected 0 (1: one of its checks failed)", code);
	return PASS;
}
