/* Case: concurrent_bounce. Pages are read and written by threads and by a forked
 * child while the main thread bounces them between the two nodes.
 *
 * Every 8-byte word w of page p holds (gen << 32) | (p << 16) | w. Each page has one
 * writer, which rewrites the whole page with gen+1, reads it back (it must see its own
 * writes: a write lost to a racing migration copy shows here), then publishes gen in
 * done[p]. Readers check every word: the low half must be exactly (p << 16) | w (data
 * of the wrong page or offset, or zeros, show here) and gen must lie between the
 * published gen before the read and the one after it plus one (a page reverting to
 * older contents shows here). */
#include "suite.h"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

enum { NPRIV = 64, NSHARED = 32, NTOTAL = NPRIV + NSHARED, NWRITERS = 2 };
#define BOUNCE_SECONDS 2.0   /* bounce for this long (or MAX_BOUNCES) ...           */
#define MIN_BOUNCES 20        /* ... but at least this many on a slow host ...        */
#define BOUNCE_LIMIT_S 10.0   /* ... unless that takes this long                      */
#define MAX_BOUNCES 400

struct shared_state {                 /* MAP_SHARED: seen by the child too */
	volatile uint64_t done[NTOTAL];   /* last complete generation per page */
	volatile int stop;
	volatile long errors;             /* data errors seen anywhere */
	volatile long child_rounds;
	char first_error[256];
};

static char *g_priv, *g_shr;
static struct shared_state *g_ss;
static volatile long g_reader_rounds, g_writer_rounds[NWRITERS];

static char *page_addr(int p)
{
	return p < NPRIV ? g_priv + (size_t)p * PAGE : g_shr + (size_t)(p - NPRIV) * PAGE;
}

static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...)
{
	long n = __atomic_add_fetch(&g_ss->errors, 1, __ATOMIC_SEQ_CST);
	if (n > 5)
		return;
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n == 1)
		memcpy(g_ss->first_error, buf, sizeof(buf));
	printf("# FAIL: %s\n", buf);
	fflush(stdout);
}

static void write_page(int p)
{
	volatile uint64_t *w = (volatile uint64_t *)page_addr(p);
	uint64_t gen = g_ss->done[p] + 1;
	for (size_t i = 0; i < WORDS_PER_PAGE; i++)
		w[i] = (gen << 32) | ((uint64_t)p << 16) | i;
	for (size_t i = 0; i < WORDS_PER_PAGE; i++) {
		uint64_t v = w[i], want = (gen << 32) | ((uint64_t)p << 16) | i;
		if (v != want) {
			report("writer: page %d byte %zu reads 0x%016llx right after writing 0x%016llx, expected what it wrote (lost write)", p, i * 8,
			       (unsigned long long)v, (unsigned long long)want);
			break;
		}
	}
	__atomic_store_n(&g_ss->done[p], gen, __ATOMIC_RELEASE);
}

static void read_page(int p)
{
	const volatile uint64_t *w = (const volatile uint64_t *)page_addr(p);
	uint64_t lo = __atomic_load_n(&g_ss->done[p], __ATOMIC_ACQUIRE);
	uint64_t seen[WORDS_PER_PAGE];
	for (size_t i = 0; i < WORDS_PER_PAGE; i++)
		seen[i] = w[i];
	uint64_t hi = __atomic_load_n(&g_ss->done[p], __ATOMIC_ACQUIRE) + 1;
	for (size_t i = 0; i < WORDS_PER_PAGE; i++) {
		uint64_t v = seen[i], gen = v >> 32;
		if ((v & 0xffffffffULL) != (((uint64_t)p << 16) | i) || gen < lo || gen > hi) {
			report("reader: page %d byte %zu = 0x%016llx, expected tag 0x%08llx with generation in [%llu, %llu]", p,
			       i * 8, (unsigned long long)v, (unsigned long long)(((uint64_t)p << 16) | i),
			       (unsigned long long)lo, (unsigned long long)hi);
			return;
		}
	}
}

static void *writer_thread(void *arg)
{
	long id = (long)arg;
	while (!g_ss->stop) {
		for (int p = (int)id; p < NPRIV; p += NWRITERS)
			write_page(p);
		g_writer_rounds[id]++;
		usleep(200);
	}
	return NULL;
}

static void *reader_thread(void *arg)
{
	(void)arg;
	while (!g_ss->stop) {
		for (int p = 0; p < NTOTAL; p++)
			read_page(p);
		g_reader_rounds++;
		usleep(200);
	}
	return NULL;
}

static void child_main(void)
{
	/* Writes the shared pages, reads the whole shared region back. */
	double end = now_s() + 30;
	while (!g_ss->stop && now_s() < end) {
		for (int p = NPRIV; p < NTOTAL; p++) {
			write_page(p);
			read_page(p);
		}
		g_ss->child_rounds++;
		usleep(200);
	}
	_exit(0);
}

static long move_region_pages(void **pages, const int *nodes, int *st)
{
	for (int p = 0; p < NTOTAL; p++)
		st[p] = STATUS_UNSET;
	return sys_move_pages(0, NTOTAL, pages, nodes, st, MPOL_MF_MOVE_ALL);
}

/* Per-page errors do_pages_move() can give here (6.1 add_page_for_migration(), 6.12
 * add_folio_for_migration()): -EBUSY, the page could not be isolated from the LRU (a
 * racing isolation or a page briefly off the LRU); -EFAULT / -ENOENT, the lookup found
 * no page at that moment (a page under migration by someone else is a migration entry:
 * -EFAULT for private anonymous memory, -ENOENT for shmem). -EACCES (shared page
 * without MOVE_ALL) cannot happen with MOVE_ALL as root; the kernel never stores -EIO,
 * -EINVAL or -ENOMEM as a page status (they end the whole call). */
static int allowed_error(int st)
{
	return st == -EBUSY || st == -EFAULT || st == -ENOENT;
}

/* Is every page where move_pages' answer says? Returns 1 for a complete bounce (return 0,
 * every page on `to`). The rules (see README):
 * - a written status is `to` (moved, or already there) or an allowed error;
 * - status `to`: the page is on `to` now (query); an error status: it is not;
 * - return 0: every status is written;
 * - return r > 0: the failed batch and the pages after it keep their statuses unwritten,
 *   and r counts the unwritten pages that did not move in this call: r = unwritten -
 *   (unwritten pages with before != to and after == to). */
static int check_bounce(int bounce, int to, long ret, const int *st, const int *before, const int *after)
{
	long unwritten = 0, unwritten_moved = 0, off = 0;
	int shown = 0;
	for (int p = 0; p < NTOTAL; p++) {
		const char *why = NULL;
		off += after[p] != to;
		if (st[p] == STATUS_UNSET) {
			unwritten++;
			unwritten_moved += before[p] != to && after[p] == to;
			if (ret == 0)
				why = "unwritten with return value 0, expected written";
		} else if (st[p] >= 0 && st[p] != to)
			why = "a node that is not the target";
		else if (st[p] < 0 && !allowed_error(st[p]))
			why = "not an error do_pages_move() gives here (-EBUSY, -EFAULT, -ENOENT)";
		else if (st[p] == to && after[p] != to)
			why = "the target, but the query says the page is elsewhere";
		else if (st[p] < 0 && after[p] == to)
			why = "an error, but the query says the page is on the target";
		if (why)
			failf("bounce %d: page %d (%s): status %s, query before %s, after %s: %s (target node %d)", bounce, p,
			      p < NPRIV ? "private" : "shared", statusname(st[p]), statusname(before[p]),
			      statusname(after[p]), why, to);
		else if (after[p] != to && shown < 4) {
			diag("  bounce %d: page %d (%s) not moved: status %s, query before %s, after %s", bounce, p,
			     p < NPRIV ? "private" : "shared", statusname(st[p]), statusname(before[p]),
			     statusname(after[p]));
			shown++;
		}
	}
	if (ret > 0 && ret != unwritten - unwritten_moved)
		failf("bounce %d: move_pages returned %ld (pages not migrated), expected %ld: %ld statuses unwritten (the "
		      "failed batch and the pages never attempted), of which %ld moved to node %d", bounce, ret,
		      unwritten - unwritten_moved, unwritten, unwritten_moved, to);
	return ret == 0 && off == 0;
}

static int join_within(pthread_t t, double seconds)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)seconds;
	return pthread_timedjoin_np(t, NULL, &ts);
}

int case_concurrent_bounce(void)
{
	const int A = g_node_a, B = g_node_b;
	g_ss = mmap(NULL, sizeof(*g_ss), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	g_priv = map_region(NPRIV, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	g_shr = map_region(NSHARED, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (g_ss == MAP_FAILED || !g_priv || !g_shr)
		return FAIL;
	memset((void *)g_ss, 0, sizeof(*g_ss));
	bind_task_to(A);
	for (int p = 0; p < NTOTAL; p++)
		write_page(p);
	bind_task_to(-1);
	void *pages[NTOTAL];
	int nodes[NTOTAL], st[NTOTAL], before[NTOTAL], after[NTOTAL];
	for (int p = 0; p < NTOTAL; p++)
		pages[p] = page_addr(p);

	/* The private pages stay private to this process: a forked copy-on-write
	 * sharer would let a writer legitimately replace a just-migrated page by a
	 * fresh copy on any node. */
	CHECK(madvise(g_priv, NPRIV * PAGE, MADV_DONTFORK) == 0, "madvise(MADV_DONTFORK): %s, expected 0", errname(errno));
	fflush(stdout);
	pid_t child = fork();
	if (child == 0)
		child_main();
	if (child < 0)
		return FAIL;
	pthread_t wt[NWRITERS], rt;
	for (long i = 0; i < NWRITERS; i++)
		pthread_create(&wt[i], NULL, writer_thread, (void *)i);
	pthread_create(&rt, NULL, reader_thread, NULL);

	/* Bounce. The shared pages are mapped by the child too: MPOL_MF_MOVE_ALL (root). */
	int bounces = 0, clean = 0, partial = 0;
	long busy = 0, absent = 0, unwritten = 0;
	double t0 = now_s();
	for (;;) {
		double el = now_s() - t0;
		if (bounces >= MAX_BOUNCES || el >= BOUNCE_LIMIT_S || (el >= BOUNCE_SECONDS && bounces >= MIN_BOUNCES))
			break;
		int to = bounces % 2 ? A : B;
		for (int p = 0; p < NTOTAL; p++)
			nodes[p] = to;
		long qb = query_pages(0, g_priv, NPRIV, before);
		qb |= query_pages(0, g_shr, NSHARED, before + NPRIV);
		long ret = move_region_pages(pages, nodes, st);
		bounces++;
		if (ret < 0) {
			failf("bounce %d: move_pages returned -1 (%s), expected >= 0", bounces, errname(errno));
			break;
		}
		long qa = query_pages(0, g_priv, NPRIV, after);
		qa |= query_pages(0, g_shr, NSHARED, after + NPRIV);
		CHECK(qb == 0 && qa == 0, "bounce %d: query before/after returned %ld/%ld, expected 0/0", bounces, qb, qa);
		if (check_bounce(bounces, to, ret, st, before, after))
			clean++;
		else
			partial++;
		for (int p = 0; p < NTOTAL; p++) {
			busy += st[p] == -EBUSY;
			absent += st[p] == -EFAULT || st[p] == -ENOENT;
			unwritten += st[p] == STATUS_UNSET;
		}
		if (g_failures)
			break;
	}
	double took = now_s() - t0;
	g_ss->stop = 1;
	int hung = 0;
	for (int i = 0; i < NWRITERS; i++)
		if (join_within(wt[i], 5)) {
			failf("writer thread %d did not stop within 5 s, expected it to", i);
			hung = 1;
		}
	if (join_within(rt, 5)) {
		failf("reader thread did not stop within 5 s, expected it to");
		hung = 1;
	}
	int code = wait_child(child, 10, "bouncing child");
	CHECK(code == 0, "child exited with %d, expected 0", code);
	diag("%d bounces of %d pages in %.2f s (%d complete, %d partial: per-page -EBUSY %ld, -EFAULT/-ENOENT %ld, "
	     "unwritten %ld); rounds: writers %ld/%ld, reader %ld, child %ld",
	     bounces, NTOTAL, took, clean, partial, busy, absent, unwritten, g_writer_rounds[0], g_writer_rounds[1],
	     g_reader_rounds, g_ss->child_rounds);
	CHECK(g_ss->errors == 0, "%ld data inconsistencies seen, expected 0 (first: %s)", g_ss->errors,
	      g_ss->first_error);
	CHECK(clean >= bounces * 3 / 4, "only %d of %d bounces moved every page, expected at least 3/4 (see README)",
	      clean, bounces);
	CHECK(bounces >= 10, "only %d bounces in %.1f s, expected at least 10", bounces, took);
	CHECK(g_reader_rounds > 0 && g_writer_rounds[0] > 0 && g_writer_rounds[1] > 0 && g_ss->child_rounds > 0,
	      "some thread made no progress while pages bounced (rounds: writers %ld/%ld, reader %ld, child %ld), expected all > 0", g_writer_rounds[0], g_writer_rounds[1], g_reader_rounds, g_ss->child_rounds);
	if (hung)
		return FAIL;
	/* Final state: every page holds exactly its last published generation. */
	for (int p = 0; p < NTOTAL; p++) {
		const volatile uint64_t *w = (const volatile uint64_t *)page_addr(p);
		uint64_t gen = g_ss->done[p];
		for (size_t i = 0; i < WORDS_PER_PAGE; i++)
			if (w[i] != ((gen << 32) | ((uint64_t)p << 16) | i)) {
				failf("final: page %d byte %zu = 0x%016llx, expected generation %llu", p, i * 8,
				      (unsigned long long)w[i], (unsigned long long)gen);
				break;
			}
	}
	return PASS;
}
