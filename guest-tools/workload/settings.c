/* Machine settings a case changes (sysfs/procfs values, cgroup directories), put back by
 * the runner after the case, whatever way it ended (failed, crashed, killed at its
 * deadline): the log of old values lives in memory shared with the runner. */
#include "suite.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define MAX_SETTINGS 16

struct setting {
	char path[160];
	char old[64]; /* "" with is_dir: a directory to remove */
	int is_dir;
};
static struct setting *g_log; /* MAX_SETTINGS entries, MAP_SHARED */
static int *g_nlog;

void settings_init(void)
{
	void *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return;
	g_nlog = p;
	g_log = (struct setting *)((char *)p + 64);
}

int sysfs_read(const char *path, char *buf, size_t n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t r = read(fd, buf, n - 1);
	close(fd);
	if (r < 0)
		return -1;
	buf[r] = 0;
	while (r > 0 && buf[r - 1] == '\n')
		buf[--r] = 0;
	return 0;
}

long sysfs_long(const char *path)
{
	char buf[64];
	return sysfs_read(path, buf, sizeof(buf)) ? -1 : strtol(buf, NULL, 10);
}

int sysfs_write(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t r = write(fd, val, strlen(val));
	int e = errno;
	close(fd);
	errno = e;
	return r == (ssize_t)strlen(val) ? 0 : -1;
}

static struct setting *log_entry(const char *path)
{
	if (!g_log)
		return NULL;
	for (int i = 0; i < *g_nlog; i++)
		if (!strcmp(g_log[i].path, path))
			return NULL; /* the first old value is the one to restore */
	if (*g_nlog == MAX_SETTINGS)
		return NULL;
	struct setting *s = &g_log[(*g_nlog)++];
	snprintf(s->path, sizeof(s->path), "%s", path);
	return s;
}

int setting_write(const char *path, const char *val)
{
	char old[256];
	if (sysfs_read(path, old, sizeof(old)))
		return -1;
	char *b = strchr(old, '['), *e = b ? strchr(b, ']') : NULL;
	if (b && e) { /* "always defer [madvise] never": the bracketed word is the value */
		*e = 0;
		memmove(old, b + 1, (size_t)(e - b));
	}
	if (strlen(old) >= sizeof(((struct setting *)0)->old)) {
		errno = E2BIG; /* could not be put back: leave it alone */
		return -1;
	}
	struct setting *s = log_entry(path);
	if (s) {
		memcpy(s->old, old, strlen(old) + 1);
		s->is_dir = 0;
	}
	return sysfs_write(path, val);
}

int setting_write_long(const char *path, long val)
{
	char b[32];
	snprintf(b, sizeof(b), "%ld", val);
	return setting_write(path, b);
}

int setting_mkdir(const char *path)
{
	if (mkdir(path, 0755) && errno != EEXIST)
		return -1;
	struct setting *s = log_entry(path);
	if (s)
		s->is_dir = 1;
	return 0;
}

void settings_restore(void)
{
	if (!g_log)
		return;
	for (int i = *g_nlog - 1; i >= 0; i--) { /* newest first */
		struct setting *s = &g_log[i];
		int r = s->is_dir ? rmdir(s->path) : sysfs_write(s->path, s->old);
		if (r && !(s->is_dir && errno == ENOENT))
			diag("settings: could not restore %s to %s: %s", s->path, s->is_dir ? "(removed)" : s->old,
			     errname(errno));
	}
	*g_nlog = 0;
}
