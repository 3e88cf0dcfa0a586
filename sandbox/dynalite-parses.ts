/**
 * dynalite parses every expression of every request again, with a PEG parser that
 * backtracks and keeps no memo. Parenthesised groups cost it most: the reserving
 * write's condition, `(attribute_not_exists(#depth) OR #depth <= :room) AND …`,
 * takes it about 1 ms, a third of the emulator's time on that write, where DynamoDB
 * spends nothing of the caller's. So the sandbox keeps what a parse gave and hands
 * later requests the same tree with their own values in it.
 *
 * What a parse answers depends on the text, the attribute names it resolves and the
 * types of the values it names (its checks look at types, never at values), except
 * for BETWEEN, which compares its two bounds: such expressions are always parsed.
 * Only trees are kept, never errors, so a bad request meets the parser as before.
 * dynalite changes a tree while it applies it (it resolves an update's values in
 * place), so each request gets a copy of its own.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

type AttributeValue = Record<string, unknown>;

interface ParseContext {
  attrNames?: Record<string, string>;
  attrVals?: Record<string, AttributeValue>;
  unusedAttrNames?: Record<string, boolean>;
  unusedAttrVals?: Record<string, boolean>;
  isKeyCondition?: boolean;
}

export interface ExpressionParser {
  parse(text: string, options: { context: ParseContext }): unknown;
}

/** Where a request's value goes in a kept tree. */
class Slot {
  readonly name: string;
  constructor(name: string) {
    this.name = name;
  }
}

const NAME_TOKEN = /#[0-9A-Za-z_]+/g;
const VALUE_TOKEN = /:[0-9A-Za-z_]+/g;
const BETWEEN = /\bbetween\b/i;
/** Distinct expressions kept per parser; the sandbox's code uses a few dozen. */
const KEEP = 2_000;

/** A copy of `tree` in which each node that `swap` answers with something else is that answer. */
function copyTree(tree: unknown, swap: (value: unknown) => unknown): unknown {
  const swapped = swap(tree);
  if (swapped !== tree) return swapped;
  if (Array.isArray(tree)) return tree.map((child) => copyTree(child, swap));
  if (tree === null || typeof tree !== 'object') return tree;
  const copy = Object.create(Object.getPrototypeOf(tree)) as Record<string, unknown>;
  for (const [key, child] of Object.entries(tree)) copy[key] = copyTree(child, swap);
  return copy;
}

function typeOf(value: AttributeValue): string {
  return Object.keys(value).join('|');
}

/**
 * Wraps `parser.parse` so that an expression seen before with the same names and
 * value types is not parsed again. Answers how many parses were spared so far.
 */
export function keepParses(parser: ExpressionParser): { spared(): number } {
  const parse = parser.parse.bind(parser);
  const kept = new Map<string, unknown>();
  let spared = 0;
  parser.parse = (text, options) => {
    const context = options.context;
    if (BETWEEN.test(text)) return parse(text, options);
    const names = [...new Set(text.match(NAME_TOKEN) ?? [])];
    const values = [...new Set(text.match(VALUE_TOKEN) ?? [])];
    const resolved = names.map((name) => context.attrNames?.[name]);
    const given = values.map((name) => context.attrVals?.[name]);
    // A name or value the request does not define: the parser words that error.
    if (resolved.some((n) => n === undefined) || given.some((v) => v === undefined || v === null || typeof v !== 'object')) {
      return parse(text, options);
    }
    const key = JSON.stringify([text, context.isKeyCondition === true, resolved, given.map((v) => typeOf(v as AttributeValue))]);
    const template = kept.get(key);
    if (template !== undefined) {
      spared++;
      // What the parser does for each name and value it resolves: they count as used.
      for (const name of names) delete context.unusedAttrNames?.[name];
      for (const name of values) delete context.unusedAttrVals?.[name];
      return copyTree(template, (node) => (node instanceof Slot ? context.attrVals?.[node.name] : node));
    }
    const tree = parse(text, options);
    if (tree !== null && typeof tree === 'object') {
      const slots = new Map<unknown, Slot>(values.map((name, i) => [given[i], new Slot(name)]));
      if (kept.size >= KEEP) kept.clear();
      kept.set(
        key,
        copyTree(tree, (node) => slots.get(node) ?? node),
      );
    }
    return tree;
  };
  return { spared: () => spared };
}

let dynaliteParses: { spared(): number } | undefined;

/**
 * Keeps the parses of the dynalite this thread loads, its condition and update
 * expressions (once however many emulators the thread starts).
 */
export function keepDynaliteParses(): { spared(): number } {
  if (!dynaliteParses) {
    const require = createRequire(import.meta.url);
    const root = dirname(require.resolve('dynalite'));
    // These are dynalite's internals: should another version move them, the sandbox
    // runs as before, only slower (and this module's test says so).
    const parsers = ['conditionParser.js', 'updateParser.js'].flatMap((file) => {
      try {
        const parser = require(join(root, 'db', file)) as Partial<ExpressionParser>;
        return typeof parser.parse === 'function' ? [keepParses(parser as ExpressionParser)] : [];
      } catch {
        return [];
      }
    });
    dynaliteParses = { spared: () => parsers.reduce((sum, p) => sum + p.spared(), 0) };
  }
  return dynaliteParses;
}
