build-fp/jobs/utf8.o: jobs/utf8.c jobs/internal.h jobs/jobs.h
jobs/internal.h:
jobs/jobs.h:
