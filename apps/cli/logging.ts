/**
 * The one logger setup for duet's apps: LogTape, to standard error, with levels, a quiet
 * mode and pretty or JSON-lines output. Libraries never log; apps call
 * `getLogger(["duet", ...])` and this decides where records go.
 *
 * @module
 */
import {
  configureSync,
  getAnsiColorFormatter,
  getJsonLinesFormatter,
  getLogger,
  getTextFormatter,
  isLogLevel,
  type LogLevel,
  type LogRecord,
  resetSync,
  type TextFormatter,
} from "@logtape/logtape";
import { UsageError } from "./io.ts";

/** Log output formats. */
export type LogFormat = "pretty" | "json";

/** What the user chose on the command line. */
export interface LoggingOptions {
  /** Lowest level written; "info" by default. */
  level?: string;
  /** Write nothing but errors. */
  quiet?: boolean;
  /** Pretty text (colour on a terminal) or one JSON object per line. */
  format?: string;
}

/** Checks the logging options; throws UsageError on an unknown level or format. */
export function parseLoggingOptions(
  options: LoggingOptions,
): { level: LogLevel; format: LogFormat } {
  const level = options.quiet ? "error" : (options.level ?? "info");
  if (!isLogLevel(level)) {
    throw new UsageError(
      `Invalid --log-level "${level}": use trace, debug, info, warning, error or fatal`,
    );
  }
  const format = options.format ?? "pretty";
  if (format !== "pretty" && format !== "json") {
    throw new UsageError(`Invalid --log-format "${format}": use pretty or json`);
  }
  return { level, format };
}

/**
 * Routes every "duet" log record to `write`. The sink writes synchronously (LogTape's
 * stream sink is asynchronous), so the last lines before an exit are never lost.
 */
export function setupLogging(
  options: LoggingOptions,
  write: (text: string) => void,
  colour = false,
): void {
  const { level, format } = parseLoggingOptions(options);
  const formatter: TextFormatter = format === "json"
    ? getJsonLinesFormatter()
    : colour
    ? getAnsiColorFormatter({ timestamp: "time" })
    : getTextFormatter({ timestamp: "date-time" });
  configureSync({
    reset: true,
    sinks: { stderr: (record: LogRecord) => write(formatter(record)) },
    loggers: [
      { category: ["duet"], lowestLevel: level, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

/** Removes the configuration (tests configure logging more than once). */
export function resetLogging(): void {
  resetSync();
}

/**
 * Writes `text` (taken literally: braces are not placeholders) as a log record of `level`
 * under `category`, through the configuration {@link setupLogging} made: for lines about the
 * run (a retry, the failure that ended it) that are plain text under `--log-format pretty`,
 * so that under `json` standard error holds nothing but JSON records.
 */
export function logText(
  category: readonly string[],
  level: "info" | "warning" | "error",
  text: string,
): void {
  const logger = getLogger([...category]);
  const literal = text.replaceAll("{", "{{").replaceAll("}", "}}");
  if (level === "info") logger.info(literal);
  else if (level === "warning") logger.warn(literal);
  else logger.error(literal);
}
