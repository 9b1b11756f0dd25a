"""Reports: tables and figures from run directories."""

from warmstart_hf.report.summary import load_run_results, markdown_table, summary_rows, write_run_summary

__all__ = ["load_run_results", "markdown_table", "summary_rows", "write_run_summary"]
