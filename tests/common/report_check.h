/*
 * Checking a run folder's report the way a user would trust it: against
 * the result files it summarises, the arithmetic docs/report.md gives,
 * and the tools that read its other files (promtool, xmllint).
 */
#ifndef MR_TEST_REPORT_CHECK_H
#define MR_TEST_REPORT_CHECK_H

#include <cjson/cJSON.h>

/* Parses run_dir/report.json and fails the test unless it has every
 * documented key, its requests and tokens match results.jsonl and
 * errors.jsonl (when finished), its cost and throughput follow from its
 * own rank-seconds, tokens and prices, its rebalances match eplb.jsonl and
 * its advice follows the rules of thumb.  The caller frees the result. */
cJSON *mr_test_check_report(const char *run_dir);

/* A number at a dotted path ("cost.on_demand_usd_per_mtok.input"); fails
 * the test when it is missing. */
double mr_test_json_number(const cJSON *root, const char *path);

/* What a shell command printed on stdout (the caller frees it), and its
 * wait status. */
char *mr_test_command_output(const char *command, int *status);

/* Fails unless `promtool check metrics` accepts the file without a word. */
void mr_test_assert_promtool_accepts(const char *path);

/* Fails unless xmllint finds the file well-formed; returns how many
 * <rect class="cell"> it holds. */
int mr_test_svg_cells(const char *path);

#endif
