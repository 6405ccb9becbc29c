/*
 * moerun stop RUN_DIR: a user's stop of the run that owns RUN_DIR, as its
 * Ctrl-C would be: SIGINT to the owner, which passes it on to its ranks;
 * they finish their step, checkpoint and exit 4, and the stop counts as a
 * user's, not a preemption.  Then it waits for the owner to let go of the
 * folder, so that a script can run `moerun stop` and then move the folder.
 *
 * Limit: the owner must run on this host (the record names it); a run
 * started under mpirun or srun by hand is owned by its rank 0, which
 * passes the stop to the others at its next step.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "runner/runner.h"

/* How long to wait for the owner to end before saying it still runs; its
 * [checkpoint] grace_seconds bound the stop, so this is only a reply. */
#define WAIT_SECONDS 120

int mr_runner_stop(int argc, char **argv)
{
    mr_runner_args args;
    int rc = mr_runner_parse_args(argc, argv, 0, "RUN_DIR", &args);
    if (rc >= 0) {
        mr_runner_free_args(&args);
        return rc;
    }
    rc = MR_EXIT_OK;
    const char *dir = args.operand;
    char owner[1024];
    int pid;
    if (!mr_runner_lock_owner(dir, &pid, owner, sizeof owner)) {
        fprintf(stderr, "moerun stop: no moerun is running %s\n", dir);
        rc = MR_EXIT_INVALID;
    } else if (pid <= 0) {
        fprintf(stderr, "moerun stop: %s is run by %s, not on this host: stop it there "
                        "(kill -INT its pid)\n",
                dir, owner[0] ? owner : "a process whose record is not written yet");
        rc = MR_EXIT_INVALID;
    } else if (kill(pid, SIGINT) != 0) {
        fprintf(stderr, "moerun stop: cannot signal pid %d: %s\n", pid, strerror(errno));
        rc = MR_EXIT_FAILED;
    } else {
        printf("moerun stop: asked %s to stop; waiting for it to checkpoint and end\n", owner);
        fflush(stdout);
        struct timespec tick = {0, 100 * 1000 * 1000};
        int other;
        char now[1024];
        for (int i = 0; i < WAIT_SECONDS * 10 && mr_runner_lock_owner(dir, &other, now, sizeof now);
             i++)
            nanosleep(&tick, NULL);
        if (mr_runner_lock_owner(dir, &other, now, sizeof now)) {
            fprintf(stderr, "moerun stop: %s still runs after %d s\n", dir, WAIT_SECONDS);
            rc = MR_EXIT_FAILED;
        } else {
            printf("moerun stop: stopped; `moerun resume %s` goes on\n", dir);
        }
    }
    mr_runner_free_args(&args);
    return rc;
}
