/* Physical memory as the kernel shows it: PFNs (/proc/self/pagemap), page flags
 * (/proc/kpageflags), /proc/meminfo, /proc/buddyinfo, /proc/zoneinfo, the per-node
 * hugetlb pool. */
#include "suite.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>

uint64_t pfn_of(const void *addr)
{
	uint64_t e = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	off_t off = (off_t)((uintptr_t)addr / PAGE) * 8;
	ssize_t n = pread(fd, &e, 8, off);
	close(fd);
	/* bit 63: present; bits 0-54: the PFN (zero unless CAP_SYS_ADMIN) */
	return n == 8 && (e >> 63) ? e & ((1ULL << 55) - 1) : 0;
}

int pfns_of(const void *base, size_t npages, uint64_t *out)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	off_t off = (off_t)((uintptr_t)base / PAGE) * 8;
	ssize_t n = pread(fd, out, npages * 8, off);
	close(fd);
	if (n != (ssize_t)(npages * 8))
		return -1;
	for (size_t i = 0; i < npages; i++)
		out[i] = (out[i] >> 63) ? out[i] & ((1ULL << 55) - 1) : 0;
	return 0;
}

int kpageflag(uint64_t pfn, int bit)
{
	uint64_t flags;
	int fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = pread(fd, &flags, 8, (off_t)(pfn * 8));
	close(fd);
	return n == 8 ? (int)((flags >> bit) & 1) : -1;
}

long long meminfo_kb(const char *field)
{
	FILE *f = fopen("/proc/meminfo", "r");
	if (!f)
		return -1;
	char line[256];
	size_t len = strlen(field);
	long long v = -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, len) && line[len] == ':') {
			v = strtoll(line + len + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

long buddy_free_blocks(int node, int min_order)
{
	FILE *f = fopen("/proc/buddyinfo", "r");
	if (!f)
		return -1;
	char line[512];
	long blocks = 0;
	while (fgets(line, sizeof(line), f)) {
		int nid, off;
		char zone[16];
		if (sscanf(line, "Node %d, zone %15s%n", &nid, zone, &off) != 2 || nid != node)
			continue;
		char *p = line + off;
		for (int order = 0;; order++) {
			char *end;
			long n = strtol(p, &end, 10);
			if (end == p)
				break;
			p = end;
			if (order >= min_order)
				blocks += n << (order - min_order);
		}
	}
	fclose(f);
	return blocks;
}

int zones_get(struct zone_info *out, int max)
{
	FILE *f = fopen("/proc/zoneinfo", "r");
	if (!f)
		return -1;
	char line[256];
	int n = -1;
	while (fgets(line, sizeof(line), f)) {
		struct zone_info *z = n >= 0 ? &out[n] : NULL;
		int nid;
		char name[16];
		long v;
		if (sscanf(line, "Node %d, zone %15s", &nid, name) == 2) {
			if (n + 1 >= max)
				break;
			out[++n] = (struct zone_info){ .node = nid };
			snprintf(out[n].name, sizeof(out[n].name), "%s", name);
		} else if (!z)
			continue;
		else if (sscanf(line, " pages free %ld", &v) == 1)
			z->free = v;
		else if (sscanf(line, " high %ld", &v) == 1)
			z->high = v;
		else if (sscanf(line, " spanned %ld", &v) == 1)
			z->spanned = v;
		else if (sscanf(line, " nr_free_cma %ld", &v) == 1)
			z->free_cma = v;
		else if (sscanf(line, " start_pfn: %ld", &v) == 1)
			z->start_pfn = v;
	}
	fclose(f);
	return n + 1;
}

int zone_of_pfn(uint64_t pfn, struct zone_info *out)
{
	struct zone_info z[16];
	int n = zones_get(z, 16);
	for (int i = 0; i < n; i++)
		if (z[i].spanned && pfn >= (uint64_t)z[i].start_pfn && pfn < (uint64_t)(z[i].start_pfn + z[i].spanned)) {
			*out = z[i];
			return 0;
		}
	return -1;
}

int node_has_movable_zone(int node)
{
	struct zone_info z[16];
	int n = zones_get(z, 16);
	for (int i = 0; i < n; i++)
		if (z[i].node == node && !strcmp(z[i].name, "Movable") && z[i].spanned > 0)
			return 1;
	return 0;
}

static void hugetlb_path(int node, char *path, size_t n)
{
	snprintf(path, n, "/sys/devices/system/node/node%d/hugepages/hugepages-2048kB/nr_hugepages", node);
}

long hugetlb_node_pages(int node)
{
	char path[128];
	hugetlb_path(node, path, sizeof(path));
	return sysfs_long(path);
}

long hugetlb_node_set(int node, long count)
{
	char path[128], val[32];
	hugetlb_path(node, path, sizeof(path));
	snprintf(val, sizeof(val), "%ld", count);
	if (sysfs_write(path, val))
		return -1;
	return sysfs_long(path);
}

int run_on_cpu_of(int node)
{
	char path[96];
	snprintf(path, sizeof(path), "/sys/devices/system/node/node%d/cpulist", node);
	long cpu = sysfs_long(path); /* "2-3": the first one */
	if (cpu < 0)
		return -1;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET((int)cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set);
}

char *map_thp_region(void)
{
	char *res = mmap(NULL, 3 * HPAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED) {
		failf("mmap reservation of 6 MiB: %s, expected success", errname(errno));
		return NULL;
	}
	char *r = (char *)(((uintptr_t)res + HPAGE) & ~(HPAGE - 1));
	if (mmap(r, HPAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != r) {
		failf("mmap 2 MiB: %s, expected success", errname(errno));
		return NULL;
	}
	CHECK(madvise(r, HPAGE, MADV_HUGEPAGE) == 0, "madvise(MADV_HUGEPAGE): %s, expected 0", errname(errno));
	return r;
}

int thp_available(void)
{
	char buf[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	if (!f)
		return 0;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	return buf[0] && !strstr(buf, "[never]");
}
