// SPDX-License-Identifier: GPL-2.0
/*
 * Provokes one real kernel crash report, chosen by `mode=`, so that the
 * crash parser's tests read what a real kernel prints (see ../capture.sh).
 */
#include <linux/bug.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/string.h>

static char *mode = "warn";
module_param(mode, charp, 0444);

static noinline void crashmod_null_store(int *where)
{
	*(volatile int *)where = 1;
}

static int __init crashmod_init(void)
{
	if (!strcmp(mode, "bug"))
		BUG();
	if (!strcmp(mode, "warn"))
		WARN_ON(1);
	if (!strcmp(mode, "null"))
		crashmod_null_store(NULL);
	if (!strcmp(mode, "hang"))	/* insmod sleeps in D state: a hung task */
		schedule_timeout_uninterruptible(8 * HZ);
	return 0;
}

static void __exit crashmod_exit(void)
{
}

module_init(crashmod_init);
module_exit(crashmod_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("provokes crash reports for the harness's parser tests");
