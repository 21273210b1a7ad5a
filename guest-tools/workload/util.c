/* Helpers of the migrate_suite guest workload: syscalls, patterns, /proc parsers. */
#include "suite.h"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>

int g_node_a = 0, g_node_b = 1, g_nr_mem_nodes;
int g_kver_major, g_kver_minor;
int g_failures;
char *g_skip_reason;

/* ------------------------------------------------------------------ output */

/* One "# PREFIX..." line on stdout. */
static void vprint(const char *prefix, const char *fmt, va_list ap)
{
	char buf[1024];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	printf("# %s%s\n", prefix, buf);
	fflush(stdout);
}

void diag(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprint("", fmt, ap);
	va_end(ap);
}

void failf(const char *fmt, ...)
{
	g_failures++;
	if (g_failures == 41)
		printf("# FAIL: (further failures not printed)\n");
	if (g_failures > 40)
		return;
	va_list ap;
	va_start(ap, fmt);
	vprint("FAIL: ", fmt, ap);
	va_end(ap);
}

int skip(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (g_skip_reason)
		vsnprintf(g_skip_reason, 256, fmt, ap);
	va_end(ap);
	return SKIP;
}

const char *errname(int e)
{
	switch (e) {
	case 0: return "0";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case ESRCH: return "ESRCH";
	case EIO: return "EIO";
	case E2BIG: return "E2BIG";
	case EAGAIN: return "EAGAIN";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case ENODEV: return "ENODEV";
	case EINVAL: return "EINVAL";
	case ENOSYS: return "ENOSYS";
	default: {
		static char b[4][16];
		static int i;
		i = (i + 1) % 4;
		snprintf(b[i], sizeof(b[i]), "errno %d", e);
		return b[i];
	}
	}
}

const char *statusname(int st)
{
	static char b[8][32];
	static int i;
	i = (i + 1) % 8;
	if (st == STATUS_UNSET)
		snprintf(b[i], sizeof(b[i]), "unwritten");
	else if (st >= 0)
		snprintf(b[i], sizeof(b[i]), "node %d", st);
	else
		snprintf(b[i], sizeof(b[i]), "-%s", errname(-st));
	return b[i];
}

/* ---------------------------------------------------------------- machine */

int kernel_at_least(int major, int minor)
{
	return g_kver_major > major || (g_kver_major == major && g_kver_minor >= minor);
}

static int read_file(const char *path, char *buf, size_t n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t got = 0;
	for (;;) {
		ssize_t r = read(fd, buf + got, n - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += r;
		if (got >= n - 1)
			break;
	}
	close(fd);
	buf[got] = 0;
	return (int)got;
}

/* A kernel list file such as "0-1,4" into up to `max` numbers; how many, or -1. */
int read_list(const char *path, int *out, int max)
{
	char buf[256];
	if (read_file(path, buf, sizeof(buf)) <= 0)
		return -1;
	int nr = 0;
	char *p = buf;
	while (*p && nr < max) {
		char *end;
		long a = strtol(p, &end, 10), b = a;
		if (end == p)
			break;
		p = end;
		if (*p == '-') {
			b = strtol(p + 1, &end, 10);
			p = end;
		}
		for (long x = a; x <= b && nr < max; x++)
			out[nr++] = (int)x;
		if (*p != ',')
			break;
		p++;
	}
	return nr;
}

void detect_machine(void)
{
	struct utsname u;
	if (uname(&u) == 0)
		sscanf(u.release, "%d.%d", &g_kver_major, &g_kver_minor);
	/* Nodes with memory: /sys/devices/system/node/has_memory, e.g. "0-1". */
	int nodes[MASK_BITS];
	int nr = read_list("/sys/devices/system/node/has_memory", nodes, MASK_BITS);
	g_nr_mem_nodes = nr > 0 ? nr : 0;
	if (nr >= 2) {
		g_node_a = nodes[0];
		g_node_b = nodes[1];
	}
}

/* --------------------------------------------------------------- syscalls */

long sys_move_pages(pid_t pid, unsigned long n, void **pages, const int *nodes, int *status, int flags)
{
	return syscall(SYS_move_pages, pid, n, pages, nodes, status, flags);
}

long sys_migrate_pages(pid_t pid, unsigned long maxnode, const unsigned long *old, const unsigned long *new_)
{
	return syscall(SYS_migrate_pages, pid, maxnode, old, new_);
}

long sys_mbind(void *addr, unsigned long len, int mode, const unsigned long *mask, unsigned long maxnode,
               unsigned flags)
{
	return syscall(SYS_mbind, addr, len, mode, mask, maxnode, flags);
}

long sys_set_mempolicy(int mode, const unsigned long *mask, unsigned long maxnode)
{
	return syscall(SYS_set_mempolicy, mode, mask, maxnode);
}

long sys_get_mempolicy(int *mode, unsigned long *mask, unsigned long maxnode, void *addr, unsigned long flags)
{
	return syscall(SYS_get_mempolicy, mode, mask, maxnode, addr, flags);
}

void nodemask_of(unsigned long mask[2], int node)
{
	mask[0] = mask[1] = 0;
	if (node >= 0 && node < 128)
		mask[node / 64] |= 1UL << (node % 64);
}

int bind_task_to(int node)
{
	unsigned long mask[2];
	if (node < 0)
		return (int)sys_set_mempolicy(MPOL_DEFAULT, NULL, 0);
	nodemask_of(mask, node);
	long r = sys_set_mempolicy(MPOL_BIND, mask, MAXNODE);
	if (r)
		failf("set_mempolicy(MPOL_BIND, {%d}) = %ld (%s), expected 0", node, r, errname(errno));
	return (int)r;
}

int node_has_cpus(int node)
{
	char path[96];
	int cpus[CPU_SETSIZE];
	snprintf(path, sizeof(path), "/sys/devices/system/node/node%d/cpulist", node);
	return read_list(path, cpus, CPU_SETSIZE) > 0;
}

int run_on_node_cpus(int node)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	if (node < 0) {
		for (int c = 0; c < CPU_SETSIZE && c < 1024; c++)
			CPU_SET(c, &set);
		return sched_setaffinity(0, sizeof(set), &set);
	}
	char path[96];
	int cpus[CPU_SETSIZE];
	snprintf(path, sizeof(path), "/sys/devices/system/node/node%d/cpulist", node);
	int nr = read_list(path, cpus, CPU_SETSIZE);
	if (nr <= 0)
		return -1; /* no such node, or memory-only: leave affinity alone */
	for (int i = 0; i < nr; i++)
		CPU_SET(cpus[i], &set);
	return sched_setaffinity(0, sizeof(set), &set);
}

/* ---------------------------------------------------------------- regions */

void *map_region(size_t npages, int flags, int fd, off_t off)
{
	size_t len = npages * PAGE;
	char *res = mmap(NULL, len + 2 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED) {
		failf("mmap reservation of %zu pages: %s, expected success", npages, errname(errno));
		return NULL;
	}
	char *p = mmap(res + PAGE, len, PROT_READ | PROT_WRITE, flags | MAP_FIXED, fd, off);
	if (p == MAP_FAILED) {
		failf("mmap of %zu pages (flags 0x%x): %s, expected success", npages, flags, errname(errno));
		munmap(res, len + 2 * PAGE);
		return NULL;
	}
	return p;
}

void unmap_region(void *p, size_t npages)
{
	if (p)
		munmap((char *)p - PAGE, npages * PAGE + 2 * PAGE);
}

uint64_t pattern_word(uint64_t seed, size_t page, size_t word)
{
	/* splitmix64 of (seed, page, word): every page of every seed differs. */
	uint64_t z = seed * 0x9E3779B97F4A7C15ULL + ((uint64_t)page << 20) + word + 1;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

void fill_pattern(void *base, size_t first_page, size_t npages, uint64_t seed)
{
	for (size_t p = first_page; p < first_page + npages; p++) {
		volatile uint64_t *w = (volatile uint64_t *)((char *)base + p * PAGE);
		for (size_t i = 0; i < WORDS_PER_PAGE; i++)
			w[i] = pattern_word(seed, p, i);
	}
}

long check_pattern(const char *what, const void *base, size_t first_page, size_t npages, uint64_t seed)
{
	long bad = 0;
	for (size_t p = first_page; p < first_page + npages; p++) {
		const volatile uint64_t *w = (const volatile uint64_t *)((const char *)base + p * PAGE);
		for (size_t i = 0; i < WORDS_PER_PAGE; i++) {
			uint64_t want = pattern_word(seed, p, i), got = w[i];
			if (got == want)
				continue;
			if (bad < 3) {
				size_t b = 0;
				while (b < 8 && ((want >> (8 * b)) & 0xff) == ((got >> (8 * b)) & 0xff))
					b++;
				int st = STATUS_UNSET;
				void *pg = (char *)base + p * PAGE;
				sys_move_pages(0, 1, &pg, NULL, &st, 0);
				failf("%s: data corrupted: first bad byte at offset %zu (page %zu, byte %zu in page), "
				      "expected word 0x%016llx, saw 0x%016llx (page now on %s)",
				      what, p * PAGE + i * 8 + b, p, i * 8 + b, (unsigned long long)want,
				      (unsigned long long)got, statusname(st));
			}
			bad++;
			break;
		}
	}
	if (bad > 3)
		failf("%s: %ld of %zu pages corrupted in all, expected 0", what, bad, npages);
	return bad;
}

void touch_read(const void *base, size_t npages)
{
	volatile uint64_t sink = 0;
	for (size_t p = 0; p < npages; p++)
		sink += *(const volatile uint64_t *)((const char *)base + p * PAGE);
	(void)sink;
}

/* ----------------------------------------------------------- observations */

long query_pages(pid_t pid, void *base, size_t npages, int *out)
{
	void **pages = calloc(npages, sizeof(void *));
	for (size_t i = 0; i < npages; i++) {
		pages[i] = (char *)base + i * PAGE;
		out[i] = STATUS_UNSET;
	}
	long r = sys_move_pages(pid, npages, pages, NULL, out, 0);
	int e = errno;
	free(pages);
	errno = e;
	return r;
}

long expect_statuses(const char *what, pid_t pid, void *base, size_t npages, const int *expected)
{
	int *st = calloc(npages, sizeof(int));
	long r = query_pages(pid, base, npages, st), wrong = 0;
	if (r != 0) {
		failf("%s: move_pages query (nodes=NULL) returned %ld (%s), expected 0", what, r, errname(errno));
		free(st);
		return (long)npages;
	}
	char label[256];
	snprintf(label, sizeof(label), "%s (move_pages query)", what);
	wrong = check_status_array(label, st, expected, npages);
	free(st);
	return wrong;
}

long expect_on_node(const char *what, pid_t pid, void *base, size_t npages, int node)
{
	int *exp = malloc(npages * sizeof(int));
	for (size_t i = 0; i < npages; i++)
		exp[i] = node;
	long w = expect_statuses(what, pid, base, npages, exp);
	free(exp);
	return w;
}

static char *slurp_proc(pid_t pid, const char *name)
{
	char path[64];
	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
	else
		snprintf(path, sizeof(path), "/proc/self/%s", name);
	size_t cap = 1 << 20;
	char *buf = malloc(cap);
	if (!buf)
		return NULL;
	if (read_file(path, buf, cap) < 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

static void parse_numa_line(const char *line, struct numa_line *o)
{
	memset(o, 0, sizeof(*o));
	o->found = 1;
	const char *p = strchr(line, ' ');
	if (!p)
		return;
	p++;
	size_t k = 0;
	while (p[k] && p[k] != ' ' && p[k] != '\n' && k < sizeof(o->policy) - 1) {
		o->policy[k] = p[k];
		k++;
	}
	p += k;
	while (*p && *p != '\n') {
		while (*p == ' ')
			p++;
		int node;
		long v;
		if (sscanf(p, "N%d=%ld", &node, &v) == 2 && node >= 0 && node < MASK_BITS) {
			o->n[node] = v;
			o->total += v;
		} else if (sscanf(p, "dirty=%ld", &v) == 1)
			o->dirty = v;
		else if (sscanf(p, "mapped=%ld", &v) == 1)
			o->mapped = v;
		else if (sscanf(p, "swapcache=%ld", &v) == 1)
			o->swapcache = v;
		while (*p && *p != ' ' && *p != '\n')
			p++;
	}
}

int numa_maps_get(pid_t pid, unsigned long addr, struct numa_line *out)
{
	memset(out, 0, sizeof(*out));
	char *buf = slurp_proc(pid, "numa_maps");
	if (!buf)
		return -1;
	char *line = buf;
	while (line && *line) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		if (strtoul(line, NULL, 16) == addr) {
			parse_numa_line(line, out);
			break;
		}
		line = nl ? nl + 1 : NULL;
	}
	free(buf);
	return out->found ? 0 : -1;
}

int expect_numa_split(const char *what, pid_t pid, void *addr, int na, long ca, int nb, long cb)
{
	struct numa_line nl;
	if (numa_maps_get(pid, (unsigned long)addr, &nl) < 0) {
		failf("%s: no /proc/%s/numa_maps line for %p, expected one", what, pid ? "PID" : "self", addr);
		return 1;
	}
	int bad = 0;
	for (int n = 0; n < MASK_BITS; n++) {
		long want = n == na ? ca : n == nb ? cb : 0;
		if (nl.n[n] != want) {
			failf("%s: numa_maps of %p says N%d=%ld, expected %ld", what, addr, n, nl.n[n], want);
			bad = 1;
		}
	}
	return bad;
}

long numa_maps_pages_on(pid_t pid, int node, int print_limit)
{
	char *buf = slurp_proc(pid, "numa_maps");
	if (!buf)
		return -1;
	long sum = 0;
	int printed = 0;
	char *line = buf;
	while (line && *line) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		struct numa_line o;
		parse_numa_line(line, &o);
		if (o.n[node] > 0) {
			sum += o.n[node];
			if (printed < print_limit) {
				diag("  still on node %d: %.200s", node, line);
				printed++;
			}
		}
		line = nl ? nl + 1 : NULL;
	}
	free(buf);
	return sum;
}

/* The kB values of `fields` in the smaps block of the VMA starting at `addr` (-1: not
 * found), from one read of the file: it walks every page table of the process. */
void smaps_fields_kb(pid_t pid, unsigned long addr, const char *const *fields, size_t n, long *out)
{
	for (size_t k = 0; k < n; k++)
		out[k] = -1;
	char *buf = slurp_proc(pid, "smaps");
	if (!buf)
		return;
	int in = 0;
	char *line = buf;
	while (line && *line) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		unsigned long s, e;
		char c;
		if (sscanf(line, "%lx-%lx %c", &s, &e, &c) == 3 && strchr(line, '-') < strchr(line, ' ')) {
			if (in)
				break;
			in = (s == addr);
		} else if (in) {
			for (size_t k = 0; k < n; k++) {
				size_t flen = strlen(fields[k]);
				if (strncmp(line, fields[k], flen) == 0 && line[flen] == ':')
					out[k] = strtol(line + flen + 1, NULL, 10);
			}
		}
		line = nl ? nl + 1 : NULL;
	}
	free(buf);
}

long smaps_get_kb(pid_t pid, unsigned long addr, const char *field)
{
	long val;
	smaps_fields_kb(pid, addr, &field, 1, &val);
	return val;
}

long status_get_kb(pid_t pid, const char *field)
{
	char *buf = slurp_proc(pid, "status");
	if (!buf)
		return -1;
	long val = -1;
	size_t flen = strlen(field);
	for (char *line = buf; line && *line;) {
		if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
			val = strtol(line + flen + 1, NULL, 10);
			break;
		}
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	free(buf);
	return val;
}

long node_free_kb(int node)
{
	char path[96], buf[4096];
	snprintf(path, sizeof(path), "/sys/devices/system/node/node%d/meminfo", node);
	if (sysfs_read(path, buf, sizeof(buf)))
		return -1;
	const char *p = strstr(buf, "MemFree:");
	return p ? strtol(p + 8, NULL, 10) : -1;
}

long long vmstat_get(const char *name)
{
	static char buf[1 << 16];
	if (read_file("/proc/vmstat", buf, sizeof(buf)) <= 0)
		return -1;
	size_t len = strlen(name);
	for (char *line = buf; line && *line;) {
		if (strncmp(line, name, len) == 0 && line[len] == ' ')
			return strtoll(line + len + 1, NULL, 10);
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	return -1;
}

void vmstat_refresh(void)
{
	int fd = open("/proc/sys/vm/stat_refresh", O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, "1\n", 2) < 0) {
			/* older kernels may say EINVAL for negative counters: values were folded anyway */
		}
		close(fd);
	} else {
		usleep(1100 * 1000); /* the vmstat worker folds per-cpu diffs every second */
	}
}

struct isolated isolated_now(void)
{
	vmstat_refresh();
	return (struct isolated){ vmstat_get("nr_isolated_anon"), vmstat_get("nr_isolated_file") };
}

int expect_isolated_back(const char *what, struct isolated base)
{
	struct isolated now = isolated_now();
	/* Other tasks' migrations (compaction) may hold pages isolated for a moment. */
	for (int t = 0; t < 3 && (now.anon != base.anon || now.file != base.file); t++) {
		usleep(100000);
		now = isolated_now();
	}
	if (now.anon == base.anon && now.file == base.file)
		return 0;
	failf("%s: nr_isolated_anon/nr_isolated_file = %lld/%lld, expected the baseline %lld/%lld (isolated pages "
	      "not put back)", what, now.anon, now.file, base.anon, base.file);
	return 1;
}

int drop_caches(void)
{
	sync();
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int r = write(fd, "3\n", 2) == 2 ? 0 : -1;
	close(fd);
	return r;
}

/* --------------------------------------------------------------- processes */

double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int wait_child(pid_t pid, int timeout_s, const char *what)
{
	double end = now_s() + timeout_s;
	int st;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			break;
		if (r < 0) {
			failf("%s: waitpid(%d): %s, expected its exit status", what, (int)pid, errname(errno));
			return -1;
		}
		if (now_s() > end) {
			failf("%s: child %d did not finish within %d s, expected it to (killed)", what, (int)pid, timeout_s);
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -1;
		}
		usleep(5000);
	}
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	failf("%s: child %d killed by signal %d, expected it to exit", what, (int)pid, WTERMSIG(st));
	return -1;
}

int become_nobody(void)
{
	if (setgroups(0, NULL) || setgid(NOBODY) || setuid(NOBODY)) {
		failf("dropping to uid/gid %d: %s, expected success", NOBODY, errname(errno));
		return -1;
	}
	/* setuid() made us non-dumpable: let same-user peers ptrace-access us again. */
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	return 0;
}

int read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, (char *)buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += r;
	}
	return 0;
}

int write_full(int fd, const void *buf, size_t n)
{
	size_t put = 0;
	while (put < n) {
		ssize_t r = write(fd, (const char *)buf + put, n - put);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		put += r;
	}
	return 0;
}

int pin_page_in_pipe(void *page, int pipefd[2])
{
	if (pipe(pipefd)) {
		failf("pipe: %s, expected success", errname(errno));
		return -1;
	}
	/* vmsplice() without SPLICE_F_GIFT: the pipe buffer takes a reference on the
	 * user page itself (no copy), which makes the page's refcount unexpected for
	 * migration until the pipe is drained. */
	struct iovec iov = { page, PAGE };
	ssize_t r = vmsplice(pipefd[1], &iov, 1, 0);
	if (r != (ssize_t)PAGE) {
		failf("vmsplice of one page returned %zd (%s), expected %lu", r, errname(errno), PAGE);
		close(pipefd[0]);
		close(pipefd[1]);
		return -1;
	}
	return 0;
}

void unpin_pipe_expect(int pipefd[2], const void *page, const char *what)
{
	static char piped[PAGE];
	int r = read_full(pipefd[0], piped, PAGE);
	close(pipefd[0]);
	close(pipefd[1]);
	if (r) {
		failf("%s: could not drain the pipe (expected the %lu bytes of the pinned page)", what, PAGE);
		return;
	}
	if (memcmp(piped, page, PAGE)) {
		size_t off = 0;
		while (piped[off] == ((const char *)page)[off])
			off++;
		failf("%s: the pipe returned data that differs from the mapped page at byte %zu, expected the same "
		      "bytes: the page the pipe pins is no longer the mapped one", what, off);
	}
}

int helper_start(struct helper *h, char *base, size_t npages, int node, uint64_t seed)
{
	*h = (struct helper){ .pid = -1, .base = base, .npages = npages, .node = node, .seed = seed };
	if (pipe(h->cmd) || pipe(h->reply)) {
		failf("pipe: %s, expected success", errname(errno));
		return -1;
	}
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		g_failures = 0; /* its own verdict, not its parent's so far */
		if (node >= 0) {
			bind_task_to(node);
			fill_pattern(base, 0, npages, seed);
			bind_task_to(-1);
		} else
			touch_read(base, npages);
		char c = '0';
		for (;;) {
			if (write_full(h->reply[1], &c, 1) || read_full(h->cmd[0], &c, 1))
				_exit(3);
			if (c == HELPER_QUIT) {
				fflush(stdout);
				_exit(g_failures ? 1 : 0);
			}
			if (c == HELPER_REWRITE)
				fill_pattern(base, 0, npages, ++h->seed);
			c = check_pattern("helper process: its pages", base, 0, npages, h->seed) ? '1' : '0';
		}
	}
	char c = 0;
	if (pid < 0 || read_full(h->reply[0], &c, 1) || c != '0') {
		failf("helper process did not start (fork: %s, ready byte '%c'), expected '0'",
		      pid < 0 ? errname(errno) : "ok", c ? c : '-');
		if (pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
		}
		return -1;
	}
	h->pid = pid;
	return 0;
}

int helper_ask(struct helper *h, char cmd)
{
	char c = cmd;
	if (write_full(h->cmd[1], &c, 1) || read_full(h->reply[0], &c, 1))
		return -1;
	return c;
}

void helper_quit(struct helper *h, const char *what)
{
	char c = HELPER_QUIT;
	write_full(h->cmd[1], &c, 1);
	int code = wait_child(h->pid, 10, what);
	CHECK(code == 0, "%s exited with %d, expected 0 (1: one of its checks failed)", what, code);
	for (int i = 0; i < 2; i++) {
		close(h->cmd[i]);
		close(h->reply[i]);
	}
}

long move_region(pid_t pid, void *base, size_t npages, const int *targets, int node, int *status, int flags)
{
	void **pages = calloc(npages, sizeof(void *));
	int *nodes = calloc(npages, sizeof(int));
	for (size_t i = 0; i < npages; i++) {
		pages[i] = (char *)base + i * PAGE;
		nodes[i] = targets ? targets[i] : node;
		status[i] = STATUS_UNSET;
	}
	long r = sys_move_pages(pid, npages, pages, nodes, status, flags);
	int e = errno;
	free(pages);
	free(nodes);
	errno = e;
	return r;
}

long check_status_array(const char *what, const int *status, const int *expected, size_t n)
{
	long wrong = 0;
	for (size_t i = 0; i < n; i++) {
		if (status[i] == expected[i])
			continue;
		if (wrong < 4)
			failf("%s: status[%zu] = %s, expected %s", what, i, statusname(status[i]),
			      statusname(expected[i]));
		wrong++;
	}
	if (wrong > 4)
		failf("%s: %ld of %zu statuses differ from the expected ones", what, wrong, n);
	return wrong;
}

void move_all_expect(const char *what, void *base, size_t npages, int node)
{
	int *st = calloc(npages, sizeof(int)), *exp = calloc(npages, sizeof(int));
	long ret = move_region(0, base, npages, NULL, node, st, MPOL_MF_MOVE);
	CHECK(ret == 0, "%s: move_pages(%zu pages -> node %d) returned %ld (%s), expected 0", what, npages, node, ret,
	      errname(ret < 0 ? errno : 0));
	for (size_t i = 0; i < npages; i++)
		exp[i] = node;
	check_status_array(what, st, exp, npages);
	expect_on_node(what, 0, base, npages, node);
	expect_numa_maps(what, 0, base, node, (long)npages);
	free(st);
	free(exp);
}

char *anon_pages_on(int node, size_t npages, uint64_t seed)
{
	char *r = map_region(npages, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!r)
		return NULL;
	bind_task_to(node); /* first touch while running on `node` places the pages there */
	fill_pattern(r, 0, npages, seed);
	bind_task_to(-1);
	return r;
}

/* ------------------------------------------------------------ machine features */

int fs_is(const char *dir, long magic)
{
	struct statfs s;
	return statfs(dir, &s) == 0 && (long)s.f_type == magic;
}

int swap_active(void)
{
	FILE *f = fopen("/proc/swaps", "r");
	if (!f)
		return 0;
	char line[256];
	int n = 0;
	while (fgets(line, sizeof(line), f))
		n++;
	fclose(f);
	return n > 1; /* header + at least one device */
}

/* MADV_PAGEOUT until every page is swapped out (query says -ENOENT); a few tries
 * because pages still in a per-CPU LRU batch are skipped by a single call. */
int page_out_all(char *r, size_t n)
{
	int *st = malloc(n * sizeof(int));
	int ok = 0;
	for (int t = 0; t < 6 && !ok; t++) {
		if (madvise(r, n * PAGE, MADV_PAGEOUT)) {
			failf("madvise(MADV_PAGEOUT): %s, expected 0", errname(errno));
			break;
		}
		query_pages(0, r, n, st);
		ok = 1;
		for (size_t i = 0; i < n; i++)
			ok &= st[i] == -ENOENT;
		if (!ok)
			usleep(20000);
	}
	free(st);
	return ok;
}

/* A page freed goes to its CPU's per-CPU list first; compaction's free scanner only takes
 * pages from the buddy allocator (isolate_freepages_block(): PageBuddy), and a node's
 * compaction never drains those lists. From 6.7 their size is tuned automatically up to
 * an eighth of the zone per node's CPUs (6.12 zone_set_pageset_high_and_batch(): high_max
 * from MIN_PERCPU_PAGELIST_HIGH_FRACTION; seen: 8354 pages on one CPU's list, 16118 its
 * high): the pages a case frees to fragment a node stay hidden there (compaction), and a
 * node that looks full drains them into room when an allocation fails (kinds_short_target,
 * __alloc_pages_direct_reclaim(): drain_all_pages()). A manual
 * percpu_pagelist_high_fraction turns the tuning off; this large one keeps each list at its
 * floor (4 batches, about 250 pages), on 6.1 too. Lists already longer shrink by each
 * stat_refresh (decay_pcp_high() on every CPU: high down by an eighth, the pages above it
 * freed): 32 of them bring 16118 down to the floor (6.1 has no decay: nothing to undo). */
void few_pcp_pages(void)
{
	if (setting_write("/proc/sys/vm/percpu_pagelist_high_fraction", "1000000"))
		failf("writing 1000000 to /proc/sys/vm/percpu_pagelist_high_fraction: %s, expected success",
		      errname(errno));
	for (int i = 0; i < 32; i++)
		sysfs_write("/proc/sys/vm/stat_refresh", "1");
}
