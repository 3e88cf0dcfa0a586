/**
 * Event type patterns: `task.changed` matches itself only; `task.*` matches every
 * type below `task` (`task.changed`, `task.comment.added`) but not `task` itself;
 * `*` matches everything.
 */
export function typeMatches(pattern: string, type: string): boolean {
  if (pattern === '*') return true;
  if (pattern.endsWith('.*')) return type.startsWith(pattern.slice(0, -1));
  return pattern === type;
}

export function anyTypeMatches(patterns: readonly string[], type: string): boolean {
  return patterns.some((pattern) => typeMatches(pattern, type));
}
