build-fp/jobs/plan_json.o: jobs/plan_json.c jobs/internal.h jobs/jobs.h
jobs/internal.h:
jobs/jobs.h:
