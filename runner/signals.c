/*
 * Stop signals.  SIGTERM and SIGUSR1 are how a cluster gives notice of a
 * preemption (Kubernetes, Slurm's --signal); SIGINT is a user's Ctrl-C or
 * `moerun stop`.  Both stop the job resumably; the report counts them
 * apart.  A rank only notes the first: the work loop sees it before its
 * next step, and every rank then commits, checkpoints and exits together.
 * An alarm of [checkpoint] grace_seconds bounds that stop, and a second
 * signal ends the rank at once; both leave the last checkpoint to resume
 * from.
 *
 * The handlers go in before anything else `run` and `resume` do, so a
 * signal at any moment is noted; a stop noted before serving starts is
 * honoured at the first step, after the first checkpoint.
 *
 * `moerun run` with the local launcher waits on mpirun, which kills the
 * ranks on SIGTERM and SIGINT but forwards SIGUSR1 and SIGUSR2 to them; so
 * the waiting parent (the supervisor) only notes each stop here, and its
 * wait loop (world.c) passes it on as SIGUSR1 (a preemption) or SIGUSR2 (a
 * user's stop) once the ranks have their handlers, or ends the start-up
 * when they do not have them yet.
 */
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runner/runner.h"

static volatile sig_atomic_t stop_signal;
static volatile sig_atomic_t n_stops;     /* how many came */
static volatile sig_atomic_t supervising; /* in the parent that launches mpirun */
static volatile sig_atomic_t durable;     /* the stop is checkpointed: nothing to lose */
static struct timespec stop_time;         /* set before stop_signal */
static volatile sig_atomic_t grace = 20;  /* [checkpoint] grace_seconds, once known */

static const int STOPS[] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2};
#define N_STOPS (sizeof STOPS / sizeof STOPS[0])

static void say(const char *text)
{
    ssize_t ignored = write(STDERR_FILENO, text, strlen(text));
    (void)ignored;
}

static void on_stop(int sig)
{
    n_stops++;
    if (!stop_signal) {
        clock_gettime(CLOCK_MONOTONIC, &stop_time);
        stop_signal = sig;
        if (!supervising)
            alarm((unsigned)grace);
        return;
    }
    if (supervising)
        return;
    if (durable)
        _exit(MR_EXIT_STOPPED);
    say("moerun: a second stop signal: stopping at once; the last checkpoint is kept\n");
    _exit(MR_EXIT_STOPPED);
}

static void on_alarm(int sig)
{
    (void)sig;
    if (!durable)
        say("moerun: [checkpoint] grace_seconds passed before the stop was durable: stopping "
            "at once; the last checkpoint is kept\n");
    _exit(MR_EXIT_STOPPED);
}

void mr_runner_signals_catch(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    sa.sa_handler = on_stop;
    sa.sa_flags = SA_RESTART;
    for (size_t i = 0; i < N_STOPS; i++)
        sigaddset(&sa.sa_mask, STOPS[i]);
    for (size_t i = 0; i < N_STOPS; i++)
        sigaction(STOPS[i], &sa, NULL);
    /* A parent may have left them blocked (a shell's background job, a
     * container's init); a stop that cannot arrive is a stop swallowed. */
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < N_STOPS; i++)
        sigaddset(&set, STOPS[i]);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

void mr_runner_signals_grace(int grace_seconds)
{
    grace = grace_seconds > 0 ? grace_seconds : 1;
    /* A stop that came while the job was being read gets the job's grace. */
    if (stop_signal && !supervising)
        alarm((unsigned)grace);
}

void mr_runner_signals_supervise(void)
{
    supervising = 1;
}

void mr_runner_signals_durable(void)
{
    durable = 1;
}

int mr_runner_stop_signal(void)
{
    return stop_signal;
}

bool mr_runner_stop_by_user(int sig)
{
    return sig == SIGINT || sig == SIGUSR2;
}

int mr_runner_stop_count(void)
{
    return n_stops;
}

double mr_runner_stop_seconds(void)
{
    if (!stop_signal)
        return 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - stop_time.tv_sec) +
           (double)(now.tv_nsec - stop_time.tv_nsec) * 1e-9;
}

const char *mr_runner_signal_name(int sig)
{
    switch (sig) {
    case SIGTERM:
        return "SIGTERM (a preemption notice)";
    case SIGINT:
        return "SIGINT (a user's stop)";
    case SIGUSR1:
        return "SIGUSR1 (a preemption notice)";
    case SIGUSR2:
        return "SIGUSR2 (a user's stop)";
    default:
        return "a signal";
    }
}
