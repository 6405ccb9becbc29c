/*
 * Stop signals.  SIGTERM, SIGINT and SIGUSR1 are how Slurm (--signal),
 * Kubernetes and a terminal ask a job to stop.  A rank only notes the
 * first: the work loop sees it before its next step, and every rank then
 * commits, checkpoints and exits together.  An alarm of [checkpoint]
 * grace_seconds bounds that stop, and a second signal ends the rank at
 * once; both leave the last checkpoint to resume from.
 *
 * `moerun run` with the local launcher waits on mpirun, which turns SIGTERM
 * and SIGINT into killing the ranks but forwards SIGUSR1 to them; so the
 * waiting parent forwards every stop signal to mpirun as SIGUSR1.
 */
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runner/runner.h"

static volatile sig_atomic_t stop_signal;
static volatile sig_atomic_t n_stops;     /* how many came */
static volatile sig_atomic_t supervising; /* in the parent that launched mpirun */
static volatile sig_atomic_t forward_to;  /* mpirun's pid while it runs, else 0 */
static volatile sig_atomic_t durable;     /* the stop is checkpointed: nothing to lose */
static struct timespec stop_time;         /* set before stop_signal */
static unsigned grace;

static void say(const char *text)
{
    ssize_t ignored = write(STDERR_FILENO, text, strlen(text));
    (void)ignored;
}

static void on_stop(int sig)
{
    n_stops++;
    if (supervising) {
        if (forward_to > 0)
            kill((pid_t)forward_to, SIGUSR1);
        if (!stop_signal) {
            clock_gettime(CLOCK_MONOTONIC, &stop_time);
            stop_signal = sig;
        }
        return;
    }
    if (durable)
        _exit(MR_EXIT_STOPPED);
    if (stop_signal) {
        say("moerun: a second stop signal: stopping at once; the last checkpoint is kept\n");
        _exit(MR_EXIT_STOPPED);
    }
    clock_gettime(CLOCK_MONOTONIC, &stop_time);
    stop_signal = sig;
    alarm(grace);
}

static void on_alarm(int sig)
{
    (void)sig;
    if (!durable)
        say("moerun: [checkpoint] grace_seconds passed before the stop was durable: stopping "
            "at once; the last checkpoint is kept\n");
    _exit(MR_EXIT_STOPPED);
}

static void catch_stops(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    static const int stops[] = {SIGTERM, SIGINT, SIGUSR1};
    for (size_t i = 0; i < sizeof stops / sizeof stops[0]; i++)
        sigaddset(&sa.sa_mask, stops[i]);
    for (size_t i = 0; i < sizeof stops / sizeof stops[0]; i++)
        sigaction(stops[i], &sa, NULL);
}

void mr_runner_signals_catch(int grace_seconds)
{
    grace = grace_seconds > 0 ? (unsigned)grace_seconds : 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    catch_stops(on_stop);
}

void mr_runner_signals_forward(int pid)
{
    forward_to = pid;
    if (!supervising) {
        supervising = 1;
        catch_stops(on_stop);
    }
    /* A stop that came while mpirun was being started. */
    if (pid > 0 && stop_signal)
        kill((pid_t)pid, SIGUSR1);
}

void mr_runner_signals_durable(void)
{
    durable = 1;
}

int mr_runner_stop_signal(void)
{
    return stop_signal;
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
        return "SIGTERM";
    case SIGINT:
        return "SIGINT";
    case SIGUSR1:
        return "SIGUSR1";
    default:
        return "a signal";
    }
}
