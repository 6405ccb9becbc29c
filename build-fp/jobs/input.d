build-fp/jobs/input.o: jobs/input.c jobs/internal.h jobs/jobs.h
jobs/internal.h:
jobs/jobs.h:
