/*
 * One owner per run folder.  `run` and `resume` take an exclusive lock on
 * RUN_DIR/owner.lock before they touch anything in the folder, and hold it
 * until they end; a second `run` or `resume` of the same folder is refused
 * at once, naming the owner from the record the lock file holds (host, pid,
 * start time, command line).
 *
 * The lock is an open file description lock (fcntl F_OFD_SETLK) on a file
 * opened close-on-exec: the kernel drops it when the owning process ends,
 * however it ends, so a crashed owner never blocks a resume, and no process
 * the owner starts (mpirun, the ranks) inherits it.  On NFS the kernel
 * turns it into an NFS lock held by the file server (NFSv4 itself, NFSv3
 * through lockd): an owner on another host holds it until its host releases
 * it or, if that host died, until the server's lease runs out (90 s by
 * default on NFSv4).  Lustre passes such locks to its lock servers only
 * when mounted with `-o flock`; with `-o localflock` a lock covers one host
 * only, and without either option the lock call fails, which is refused
 * here rather than run unprotected.  docs/running.md says the same.
 *
 * The record is only a description: the lock decides.  An owner releases
 * by emptying the record before it closes, so a record left by a crash is
 * never mistaken for an owner.
 */
#define _GNU_SOURCE /* F_OFD_SETLK */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runner/runner.h"

struct mr_runner_lock {
    int fd;
};

static struct flock whole_file(short type)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    return fl;
}

/* The owner's record, or NULL when it is empty or unreadable. */
static cJSON *read_record(int fd)
{
    char text[4096];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    if (n <= 0)
        return NULL;
    text[n] = '\0';
    return cJSON_Parse(text);
}

/* The record as one line for a message; "" when it says nothing. */
static void describe_owner(const cJSON *rec, char *out, size_t len)
{
    const cJSON *host = cJSON_GetObjectItem(rec, "host"), *pid = cJSON_GetObjectItem(rec, "pid"),
                *started = cJSON_GetObjectItem(rec, "started"),
                *command = cJSON_GetObjectItem(rec, "command");
    out[0] = '\0';
    if (!cJSON_IsString(host) || !cJSON_IsNumber(pid) || !cJSON_IsNumber(started))
        return;
    char when[64];
    time_t t = (time_t)started->valuedouble;
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime_r(&t, &tm));
    double ago = difftime(time(NULL), t);
    snprintf(out, len, "pid %d on host %s, started %s (%.0f s ago)%s%s", (int)pid->valuedouble,
             host->valuestring, when, ago > 0 ? ago : 0.0, cJSON_IsString(command) ? ": " : "",
             cJSON_IsString(command) ? command->valuestring : "");
}

static int write_record(int fd, int argc, char **argv)
{
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    cJSON *rec = cJSON_CreateObject();
    cJSON_AddStringToObject(rec, "host", host);
    cJSON_AddNumberToObject(rec, "pid", (double)getpid());
    cJSON_AddNumberToObject(rec, "started", (double)time(NULL));
    mr_buf command = {0};
    for (int i = 0; i < argc; i++)
        mr_buf_printf(&command, "%s%s", i ? " " : "moerun ", argv[i]);
    cJSON_AddStringToObject(rec, "command", command.data ? command.data : "moerun");
    mr_buf_free(&command);
    char *text = cJSON_PrintUnformatted(rec);
    cJSON_Delete(rec);
    size_t len = text ? strlen(text) : 0;
    int ok = text && ftruncate(fd, 0) == 0 && pwrite(fd, text, len, 0) == (ssize_t)len &&
             pwrite(fd, "\n", 1, (off_t)len) == 1 && fsync(fd) == 0;
    free(text);
    return ok ? 0 : -1;
}

int mr_runner_lock_take(const char *run_dir, int argc, char **argv, mr_runner_lock **out)
{
    char err[512];
    *out = NULL;
    if (mr_runner_mkdir_p(run_dir, err, sizeof err) != MR_JOBS_OK)
        return mr_runner_write_failed(run_dir, errno);
    char *path = mr_runner_path(run_dir, MR_RUN_LOCK);
    int fd = path ? open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644) : -1, rc = MR_EXIT_OK;
    if (fd < 0) {
        rc = path ? mr_runner_write_failed(path, errno) : MR_EXIT_FAILED;
        free(path);
        return rc;
    }
    struct flock fl = whole_file(F_WRLCK);
    if (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
        if (errno == EAGAIN || errno == EACCES) {
            /* An owner that has just taken the lock writes its record
             * within microseconds: give it a moment to say who it is. */
            char owner[1024] = "";
            struct timespec tick = {0, 20 * 1000 * 1000};
            for (int tries = 0; !owner[0] && tries < 50; tries++) {
                cJSON *rec = read_record(fd);
                describe_owner(rec, owner, sizeof owner);
                cJSON_Delete(rec);
                if (!owner[0])
                    nanosleep(&tick, NULL);
            }
            fprintf(stderr,
                    "moerun run: %s is in use by another moerun: %s\n"
                    "One run folder has one owner; wait for it to end, stop it (moerun stop "
                    "%s), or give this job another [job] run_dir.  An owner whose host died "
                    "holds the folder until the file server's lock lease runs out (see "
                    "docs/running.md).\n",
                    run_dir, owner[0] ? owner : "its record is not written yet", run_dir);
        } else {
            fprintf(stderr,
                    "moerun run: cannot lock %s: %s: the file system of the run folder does "
                    "not support file locks (Lustre: mount with -o flock; NFSv3: run lockd "
                    "and rpc.statd); moerun will not run a folder it cannot own "
                    "(docs/running.md)\n",
                    path, strerror(errno));
        }
        rc = MR_EXIT_INVALID;
    } else if (write_record(fd, argc, argv) != 0) {
        rc = mr_runner_write_failed(path, errno);
    }
    free(path);
    mr_runner_lock *lock = rc == MR_EXIT_OK ? malloc(sizeof *lock) : NULL;
    if (rc == MR_EXIT_OK && !lock) {
        fprintf(stderr, "moerun run: out of memory\n");
        rc = MR_EXIT_FAILED;
    }
    if (rc != MR_EXIT_OK) {
        close(fd);
        return rc;
    }
    lock->fd = fd;
    *out = lock;
    return MR_EXIT_OK;
}

void mr_runner_lock_release(mr_runner_lock *lock)
{
    if (!lock)
        return;
    if (ftruncate(lock->fd, 0) != 0) {
        /* The lock still goes with the close; a record left behind names no owner. */
    }
    close(lock->fd);
    free(lock);
}

bool mr_runner_lock_owner(const char *run_dir, int *pid, char *owner, size_t len)
{
    owner[0] = '\0';
    *pid = 0;
    char *path = mr_runner_path(run_dir, MR_RUN_LOCK);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    free(path);
    if (fd < 0)
        return false;
    struct flock fl = whole_file(F_RDLCK);
    bool owned = fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    cJSON *rec = owned ? read_record(fd) : NULL;
    describe_owner(rec, owner, len);
    const cJSON *p = cJSON_GetObjectItem(rec, "pid"), *h = cJSON_GetObjectItem(rec, "host");
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    /* Only a process on this host can be signalled from here. */
    if (cJSON_IsNumber(p) && cJSON_IsString(h) && strcmp(h->valuestring, host) == 0)
        *pid = (int)p->valuedouble;
    cJSON_Delete(rec);
    close(fd);
    return owned;
}
