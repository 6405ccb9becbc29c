build-fp/jobs/job.o: jobs/job.c jobs/jobs.h
jobs/jobs.h:
