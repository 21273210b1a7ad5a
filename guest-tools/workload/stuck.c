/* Is a case that overran its deadline stuck in the kernel? Its tasks (threads included)
 * from /proc, and their kernel stacks. */
#include "suite.h"

#include <dirent.h>
#include <fcntl.h>

static int read_small(const char *path, char *buf, size_t n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t r = read(fd, buf, n - 1);
	close(fd);
	buf[r > 0 ? r : 0] = 0;
	return r > 0 ? (int)r : -1;
}

/* "pid (comm) S ppid pgrp ...": state and process group; 0 if unreadable. */
static int parse_stat(const char *path, char *state, pid_t *pgrp, char *comm, size_t ncomm)
{
	char buf[512];
	if (read_small(path, buf, sizeof(buf)) < 0)
		return 0;
	char *open_ = strchr(buf, '('), *close_ = strrchr(buf, ')');
	int ppid, pg;
	if (!open_ || !close_ || sscanf(close_ + 1, " %c %d %d", state, &ppid, &pg) != 3)
		return 0;
	snprintf(comm, ncomm, "%.*s", (int)(close_ - open_ - 1), open_ + 1);
	*pgrp = pg;
	return 1;
}

int group_tasks(pid_t pgrp, struct task_info *out, int max)
{
	DIR *proc = opendir("/proc");
	if (!proc)
		return 0;
	int n = 0;
	struct dirent *d;
	while ((d = readdir(proc)) && n < max) {
		pid_t pid = (pid_t)atoi(d->d_name);
		char path[96], state, comm[sizeof(out->comm)];
		pid_t pg;
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		if (pid <= 0 || !parse_stat(path, &state, &pg, comm, sizeof(comm)) || pg != pgrp)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
		DIR *tasks = opendir(path);
		struct dirent *t;
		while (tasks && (t = readdir(tasks)) && n < max) {
			pid_t tid = (pid_t)atoi(t->d_name);
			snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)pid, (int)tid);
			if (tid <= 0 || !parse_stat(path, &state, &pg, comm, sizeof(comm)) || state == 'Z' ||
			    state == 'X')
				continue;
			out[n] = (struct task_info){ .pid = pid, .tid = tid, .state = state };
			snprintf(out[n].comm, sizeof(out[n].comm), "%s", comm);
			n++;
		}
		if (tasks)
			closedir(tasks);
	}
	closedir(proc);
	return n;
}

/* Frames that only say the task waits (scheduler, sleeping locks, page/folio waits). */
static int waiting_frame(const char *fn)
{
	static const char *const prefixes[] = { "__schedule", "schedule", "io_schedule", "preempt_schedule",
		                                    "__cond_resched", "msleep", "usleep_range", "do_nanosleep",
		                                    "hrtimer_nanosleep", "wait_", "__wait", "down", "__down",
		                                    "rwsem_", "mutex_", "__mutex", "rt_mutex", "__rt_mutex",
		                                    "__folio_lock", "folio_wait", "__lock_page", "wait_on_page" };
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (!strncmp(fn, prefixes[i], strlen(prefixes[i])))
			return 1;
	return 0;
}

void kernel_stack(struct task_info *t)
{
	char path[96];
	t->top[0] = 0;
	snprintf(path, sizeof(path), "/proc/%d/task/%d/stack", (int)t->pid, (int)t->tid);
	if (read_small(path, t->stack, sizeof(t->stack)) > 0) {
		/* lines "[<0>] kernel_move_pages+0x8d/0x1a0": the first that is not a wait */
		for (char *line = t->stack; *line;) {
			char *fn = strstr(line, "] "), *nl = strchr(line, '\n');
			size_t len = nl ? (size_t)(nl - line) : strlen(line);
			if (fn && fn < line + len) {
				fn += 2;
				int flen = (int)(line + len - fn);
				if (!t->top[0] || !waiting_frame(fn))
					snprintf(t->top, sizeof(t->top), "%.*s", flen, fn);
				if (!waiting_frame(fn))
					break;
			}
			if (!nl)
				break;
			line = nl + 1;
		}
		return;
	}
	/* No CONFIG_STACKTRACE: wchan names the function the task sleeps in (scheduler
	 * functions skipped by the kernel itself). */
	snprintf(path, sizeof(path), "/proc/%d/task/%d/wchan", (int)t->pid, (int)t->tid);
	if (read_small(path, t->top, sizeof(t->top)) < 0 || !strcmp(t->top, "0"))
		snprintf(t->top, sizeof(t->top), "unknown (no /proc/PID/stack, no wchan)");
	snprintf(t->stack, sizeof(t->stack), "(no /proc/%d/task/%d/stack: CONFIG_STACKTRACE?) wchan: %s",
	         (int)t->pid, (int)t->tid, t->top);
}
