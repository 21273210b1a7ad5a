/* The migrate:mm_migrate_pages trace events a case caused, from tracefs.
 *
 * The event prints (include/trace/events/migrate.h; 6.1 and 6.12 alike for the fields
 * used here; later kernels add nr_split= before mode=):
 *   mm_migrate_pages: nr_succeeded=%lu nr_failed=%lu nr_thp_succeeded=%lu
 *   nr_thp_failed=%lu nr_thp_split=%lu mode=%s reason=%s
 * with reason one of compaction, memory_failure, memory_hotplug, syscall_or_cpuset,
 * mempolicy_mbind, numa_misplaced, contig_range, longterm_pin, demotion. The buffer is
 * global: cases run one at a time. Events are taken out of it as they are read (trace_pipe,
 * never blocking) and summed per reason in a tally shared with the case's process; the
 * runner empties both before each case. (Clearing and reading the `trace` file instead
 * waits for an RCU grace period each time: about 40 ms per case under TCG, 1 s a run.) */
#include "suite.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>

#define EVENT "events/migrate/mm_migrate_pages/enable"
#define MAX_REASONS 16

static char g_tracefs[64]; /* "" when unavailable */

struct reason_count {
	char name[32];
	long events, succeeded, failed;
};

static struct tally { /* MAP_SHARED: the runner's and its case's */
	int n;
	struct reason_count rc[MAX_REASONS];
} *g_tally;

static int tracefs_file(const char *name, char *path, size_t n)
{
	return snprintf(path, n, "%s/%s", g_tracefs, name) < (int)n ? 0 : -1;
}

static int write_tracefs(const char *name, const char *val, int flags)
{
	char path[160];
	tracefs_file(name, path, sizeof(path));
	int fd = open(path, O_WRONLY | O_CLOEXEC | flags);
	if (fd < 0)
		return -1;
	int r = write(fd, val, strlen(val)) == (ssize_t)strlen(val) ? 0 : -1;
	close(fd);
	return r;
}

static int has_trace_file(const char *dir)
{
	char path[96];
	snprintf(path, sizeof(path), "%s/trace", dir);
	return access(path, F_OK) == 0;
}

void trace_setup(void)
{
	const char *dir = NULL;
	if (has_trace_file("/sys/kernel/tracing") ||
	    (mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, NULL) == 0 && has_trace_file("/sys/kernel/tracing")))
		dir = "/sys/kernel/tracing";
	else if (has_trace_file("/sys/kernel/debug/tracing"))
		dir = "/sys/kernel/debug/tracing";
	if (!dir) {
		diag("migrate trace: unavailable (no tracefs: not at /sys/kernel/tracing, cannot mount it there (%s), "
		     "not at /sys/kernel/debug/tracing; CONFIG_FTRACE?)", errname(errno));
		return;
	}
	snprintf(g_tracefs, sizeof(g_tracefs), "%s", dir);
	g_tally = mmap(NULL, sizeof(*g_tally), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (g_tally == MAP_FAILED || write_tracefs(EVENT, "1", 0) || write_tracefs("tracing_on", "1", 0)) {
		diag("migrate trace: unavailable (writing 1 to %s/" EVENT ": %s; no migrate events in this kernel?)", dir,
		     errname(errno));
		g_tracefs[0] = 0;
		return;
	}
	diag("migrate trace: %s, event migrate:mm_migrate_pages enabled", dir);
}

void trace_teardown(void)
{
	if (trace_available())
		write_tracefs(EVENT, "0", 0);
}

int trace_available(void) { return g_tracefs[0] != 0; }

/* The value of "key=" in an event line, or -1. */
static long field(const char *line, const char *key)
{
	const char *p = strstr(line, key);
	return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

static void tally_line(const char *line)
{
	const char *ev = strstr(line, " mm_migrate_pages: "), *rs = ev ? strstr(ev, " reason=") : NULL;
	char name[32];
	if (!rs || sscanf(rs, " reason=%31s", name) != 1)
		return;
	int i = 0;
	while (i < g_tally->n && strcmp(g_tally->rc[i].name, name))
		i++;
	if (i == g_tally->n) {
		if (i == MAX_REASONS)
			return;
		g_tally->rc[g_tally->n++] = (struct reason_count){ .events = 0 };
		snprintf(g_tally->rc[i].name, sizeof(g_tally->rc[i].name), "%s", name);
	}
	g_tally->rc[i].events++;
	g_tally->rc[i].succeeded += field(ev, " nr_succeeded=");
	g_tally->rc[i].failed += field(ev, " nr_failed=");
}

/* Take every event out of the buffer into the tally. A read returns what is left of a
 * line first, and an empty buffer says EAGAIN: at that point every line is whole. */
static int drain(void)
{
	char path[160];
	tracefs_file("trace_pipe", path, sizeof(path));
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t len = 0, cap = 1 << 16;
	char *text = malloc(cap);
	for (ssize_t r; text; len += (size_t)r) {
		if (cap - len < 4096 + 1)
			text = realloc(text, cap *= 2);
		if (!text || (r = read(fd, text + len, cap - len - 1)) <= 0)
			break;
	}
	close(fd);
	if (!text)
		return -1;
	text[len] = 0;
	char *save;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		tally_line(line);
	free(text);
	return 0;
}

void trace_clear(void)
{
	if (trace_available() && drain() == 0)
		memset(g_tally, 0, sizeof(*g_tally));
}

void trace_report(void)
{
	if (!trace_available() || drain())
		return;
	for (int i = 0; i < g_tally->n; i++)
		diag("migrate_reason: %s events=%ld succeeded=%ld failed=%ld", g_tally->rc[i].name, g_tally->rc[i].events,
		     g_tally->rc[i].succeeded, g_tally->rc[i].failed);
}

int trace_count(const char *reason, long *succeeded, long *failed)
{
	*succeeded = *failed = 0;
	if (!trace_available() || drain())
		return -1;
	for (int i = 0; i < g_tally->n; i++)
		if (!strcmp(g_tally->rc[i].name, reason)) {
			*succeeded = g_tally->rc[i].succeeded;
			*failed = g_tally->rc[i].failed;
			return (int)g_tally->rc[i].events;
		}
	return 0;
}

struct trace_mark trace_mark(const char *reason)
{
	struct trace_mark m;
	trace_count(reason, &m.succeeded, &m.failed);
	return m;
}

void expect_trace(const char *what, const char *reason, struct trace_mark since, long smin, long smax, long f)
{
	long s, fl;
	int events = trace_count(reason, &s, &fl);
	if (events < 0)
		return;
	s -= since.succeeded;
	fl -= since.failed;
	if (s < smin || s > smax || (f != TRACE_ANY_FAILED && fl != f)) {
		char range[48];
		if (smin == smax)
			snprintf(range, sizeof(range), "%ld", smin);
		else
			snprintf(range, sizeof(range), "%ld..%ld", smin, smax);
		char failed[24] = "any";
		if (f != TRACE_ANY_FAILED)
			snprintf(failed, sizeof(failed), "%ld", f);
		failf("%s: migrate:mm_migrate_pages events with reason=%s say nr_succeeded %ld, nr_failed %ld, expected "
		      "%s and %s (events with that reason so far: %d)", what, reason, s, fl, range, failed, events);
	}
}
