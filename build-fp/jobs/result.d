build-fp/jobs/result.o: jobs/result.c jobs/internal.h jobs/jobs.h
jobs/internal.h:
jobs/jobs.h:
