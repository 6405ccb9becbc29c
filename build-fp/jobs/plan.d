build-fp/jobs/plan.o: jobs/plan.c jobs/internal.h jobs/jobs.h
jobs/internal.h:
jobs/jobs.h:
