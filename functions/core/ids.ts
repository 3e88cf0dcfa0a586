import { createHash, randomBytes } from 'node:crypto';

export type IdPrefix = 'ten' | 'evt' | 'wh' | 'msg' | 'att' | 'sw';

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';

/**
 * A prefixed id: a millisecond timestamp (so ids sort roughly by creation) and ten
 * random base-36 characters, about 51 bits (each from a random byte, mod 36), e.g.
 * `evt_0mwro18g09uu4p156s0`. Enough that two ids made in one millisecond do not meet;
 * an id is a name, never a secret (keys and signing secrets have 256 random bits).
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
