build-fp/jobs/request.o: jobs/request.c jobs/internal.h jobs/jobs.h
jobs/internal.h:
jobs/jobs.h:
