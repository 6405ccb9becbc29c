build-fp/jobs/hash.o: jobs/hash.c jobs/internal.h jobs/jobs.h
jobs/internal.h:
jobs/jobs.h:
