import { createHash, randomBytes } from 'node:crypto';

export type IdPrefix = 'ten' | 'evt' | 'wh' | 'msg' | 'att' | 'sw';

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';

/**
 * A prefixed id: a millisecond timestamp (so ids sort roughly by creation) and
 * 80 random bits, e.g. `evt_0mhkq3b1c_5k2x9d7f0a1b3c4e`.
 */
export function newId(prefix: IdPrefix, now: number = Date.now(), random: (n: number) => Buffer = randomBytes): string {
  const bytes = random(10);
  let tail = '';
  for (const byte of bytes) tail += ALPHABET[byte % 36];
  return `${prefix}_${now.toString(36).padStart(9, '0')}${tail}`;
}

/**
 * A prefixed id derived from what it names (the same parts give the same id), for
 * what must keep its id when it is made again: a delivery sent again after a crash,
 * so that its subscriber sees one `msg_` id, or a switch set again on its scope.
 */
export function derivedId(prefix: IdPrefix, ...parts: ReadonlyArray<string | number>): string {
  const digest = createHash('sha256').update(parts.join('|')).digest();
  let tail = '';
  for (const byte of digest.subarray(0, 19)) tail += ALPHABET[byte % 36];
  return `${prefix}_${tail}`;
}

const ID_PATTERN = /^(ten|evt|wh|msg|att|sw)_[0-9a-z]{19}$/;

export function isId(prefix: IdPrefix, value: string): boolean {
  const match = ID_PATTERN.exec(value);
  return match !== null && match[1] === prefix;
}
