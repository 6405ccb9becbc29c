build-fp/jobs/suggest.o: jobs/suggest.c jobs/jobs.h
jobs/jobs.h:
