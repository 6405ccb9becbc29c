build-fp/jobs/buf.o: jobs/buf.c jobs/jobs.h
jobs/jobs.h:
