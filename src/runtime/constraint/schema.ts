/**
 * JSON Schema (a documented subset) → the schema tree the byte automaton walks.
 *
 * Supported keywords (anything else is refused with a UserError naming the keyword and its JSON Pointer):
 *   type (one name or an array of names: object, array, string, number, integer, boolean, null),
 *   properties, required, additionalProperties (true, false or a schema), items (one schema),
 *   minItems, maxItems, minLength, maxLength, enum, const,
 *   and the annotations title, description, default, examples, $schema, $id, $comment (ignored).
 *
 * Generation choices (the output is always valid against the schema; these only narrow what is produced):
 *   - Properties are written in the order of `properties` (required ones always, optional ones may be skipped);
 *     `required` names missing from `properties` come after them (with the additionalProperties schema).
 *   - With `properties` and no `additionalProperties`, only the listed properties are written (extra ones would
 *     be valid but are not produced). With `additionalProperties: true` or a schema, extra keys may follow the
 *     listed ones; they are written without escapes and differ from every listed name.
 *   - enum/const values are written in their compact JSON form (`JSON.stringify`).
 *   - Without `type`, the type is inferred from the keywords (properties… → object, items… → array,
 *     minLength/maxLength → string); a schema with none of them (`{}` or `true`) allows any JSON value.
 */
import { UserError } from '../../errors.js';
import { LiteralTrie } from './literal-trie.js';

export interface PropertySpec {
  readonly name: string;
  /** The name's JSON string content without the quotes, as UTF-8 bytes (what the key must spell). */
  readonly keyBytes: Uint8Array;
  readonly value: SchemaNode;
  readonly required: boolean;
}

export type SchemaNode =
  | { readonly kind: 'any'; readonly id: number }
  | {
      readonly kind: 'object'; readonly id: number;
      readonly props: readonly PropertySpec[];
      /** Schema of extra properties; null: none may be written. */
      readonly additional: SchemaNode | null;
    }
  | { readonly kind: 'array'; readonly id: number; readonly items: SchemaNode; readonly minItems: number; readonly maxItems: number }
  | { readonly kind: 'string'; readonly id: number; readonly minLength: number; readonly maxLength: number }
  | { readonly kind: 'number'; readonly id: number; readonly integer: boolean }
  /** A fixed set of JSON texts (enum, const, boolean, null). */
  | { readonly kind: 'literal'; readonly id: number; readonly trie: LiteralTrie }
  /** One of several types: `pick[b]` is the option whose value can start with byte b (or undefined). */
  | { readonly kind: 'union'; readonly id: number; readonly options: readonly SchemaNode[]; readonly pick: readonly (SchemaNode | undefined)[] };

const TYPE_NAMES = ['object', 'array', 'string', 'number', 'integer', 'boolean', 'null'] as const;
type TypeName = (typeof TYPE_NAMES)[number];

const ANNOTATIONS = new Set(['title', 'description', 'default', 'examples', '$schema', '$id', '$comment']);
const KEYWORDS = new Set([
  'type', 'properties', 'required', 'additionalProperties', 'items', 'minItems', 'maxItems',
  'minLength', 'maxLength', 'enum', 'const',
]);

const utf8 = new TextEncoder();

/** Bytes a value of each type can start with (used to check that a union is decided by its first byte). */
function firstBytes(node: SchemaNode): number[] {
  switch (node.kind) {
    case 'object': return [0x7b];
    case 'array': return [0x5b];
    case 'string': return [0x22];
    case 'number': return [0x2d, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39];
    case 'literal': return node.trie.firstBytes();
    case 'any':
    case 'union': {
      const out: number[] = [];
      for (let b = 0; b < 256; b++) if (node.kind === 'any' || node.pick[b]) out.push(b);
      return out;
    }
  }
}

/** The JSON type of a parsed JSON value, as JSON Schema names it (integers are also numbers). */
function typesOf(v: unknown): TypeName[] {
  if (v === null) return ['null'];
  if (Array.isArray(v)) return ['array'];
  switch (typeof v) {
    case 'boolean': return ['boolean'];
    case 'string': return ['string'];
    case 'number': return Number.isInteger(v) ? ['number', 'integer'] : ['number'];
    default: return ['object'];
  }
}

/** JSON Pointer escaping of one path segment. */
function seg(s: string): string {
  return s.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** Compiles schemas into nodes; numbers nodes for the automaton's state keys. */
export class SchemaCompiler {
  private nextId = 0;
  /** The node for "any JSON value" and its members (shared by every `{}` in the schema). */
  readonly any: SchemaNode;
  readonly anyObject: SchemaNode;
  readonly anyArray: SchemaNode;
  readonly anyString: SchemaNode;
  readonly anyNumber: SchemaNode;
  readonly anyLiteral: SchemaNode;

  constructor() {
    this.any = { kind: 'any', id: this.id() };
    this.anyObject = { kind: 'object', id: this.id(), props: [], additional: this.any };
    this.anyArray = { kind: 'array', id: this.id(), items: this.any, minItems: 0, maxItems: Infinity };
    this.anyString = { kind: 'string', id: this.id(), minLength: 0, maxLength: Infinity };
    this.anyNumber = { kind: 'number', id: this.id(), integer: false };
    this.anyLiteral = this.literal(['true', 'false', 'null']);
  }

  private id(): number {
    return this.nextId++;
  }

  private literal(texts: string[]): SchemaNode {
    return { kind: 'literal', id: this.id(), trie: new LiteralTrie(texts.map((t) => utf8.encode(t))) };
  }

  /** Compiles `schema` found at JSON Pointer `path` (e.g. `#/properties/a`). */
  compile(schema: unknown, path = '#'): SchemaNode {
    if (schema === true) return this.any;
    if (schema === false) throw new UserError(`JSON schema at ${path} is false: no value can match it`);
    if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) {
      throw new UserError(`JSON schema at ${path} must be an object or a boolean`);
    }
    const s = schema as Record<string, unknown>;
    for (const k of Object.keys(s)) {
      if (!KEYWORDS.has(k) && !ANNOTATIONS.has(k)) {
        throw new UserError(`unsupported JSON Schema keyword '${k}' at ${path} (supported: ${[...KEYWORDS].join(', ')})`);
      }
    }
    let types = this.types(s, path);
    if ('enum' in s || 'const' in s) return this.enumLiteral(s, types, path);
    types ??= this.inferTypes(s);
    if (types === undefined) return this.any;
    // integer ⊂ number: a union with both is just number.
    if (types.includes('number')) types = types.filter((t) => t !== 'integer');
    const options = types.map((t) => this.typed(s, t, path));
    if (options.length === 1) return options[0]!;
    const pick: (SchemaNode | undefined)[] = new Array<SchemaNode | undefined>(256);
    for (const o of options) {
      for (const b of firstBytes(o)) {
        if (pick[b]) throw new UserError(`JSON schema at ${path}: the types ${types.join(', ')} cannot be told apart by their first byte`);
        pick[b] = o;
      }
    }
    return { kind: 'union', id: this.id(), options, pick };
  }

  /** The `type` keyword as a list of names (undefined when absent). */
  private types(s: Record<string, unknown>, path: string): TypeName[] | undefined {
    if (!('type' in s)) return undefined;
    const t = s.type;
    const list = Array.isArray(t) ? t : [t];
    if (list.length === 0) throw new UserError(`JSON schema at ${path}/type: an empty type list matches nothing`);
    for (const name of list) {
      if (typeof name !== 'string' || !(TYPE_NAMES as readonly string[]).includes(name)) {
        throw new UserError(`JSON schema at ${path}/type: unknown type ${JSON.stringify(name)} (expected ${TYPE_NAMES.join(', ')})`);
      }
    }
    return [...new Set(list as TypeName[])];
  }

  private inferTypes(s: Record<string, unknown>): TypeName[] | undefined {
    if ('properties' in s || 'required' in s || 'additionalProperties' in s) return ['object'];
    if ('items' in s || 'minItems' in s || 'maxItems' in s) return ['array'];
    if ('minLength' in s || 'maxLength' in s) return ['string'];
    return undefined;
  }

  /** enum / const: the allowed values (restricted to `types` when given) as a literal node. */
  private enumLiteral(s: Record<string, unknown>, types: TypeName[] | undefined, path: string): SchemaNode {
    let values: unknown[];
    if ('enum' in s) {
      if (!Array.isArray(s.enum)) throw new UserError(`JSON schema at ${path}/enum must be an array`);
      values = s.enum;
    } else {
      values = [s.const];
    }
    let texts = values.map((v) => {
      const t = JSON.stringify(v);
      if (t === undefined) throw new UserError(`JSON schema at ${path}: enum/const value is not JSON`);
      return t;
    });
    if ('enum' in s && 'const' in s) {
      const c = JSON.stringify(s.const);
      texts = texts.filter((t) => t === c);
    }
    if (types) {
      const ok = new Set<string>(types);
      texts = texts.filter((_, k) => typesOf(JSON.parse(texts[k]!)).some((t) => ok.has(t)));
    }
    texts = [...new Set(texts)];
    if (texts.length === 0) throw new UserError(`JSON schema at ${path}: no enum/const value matches the schema`);
    return this.literal(texts);
  }

  private count(s: Record<string, unknown>, key: string, path: string): number | undefined {
    if (!(key in s)) return undefined;
    const v = s[key];
    if (!(typeof v === 'number' && Number.isInteger(v) && v >= 0)) {
      throw new UserError(`JSON schema at ${path}/${key} must be an integer ≥ 0`);
    }
    return v;
  }

  private bounds(s: Record<string, unknown>, minKey: string, maxKey: string, path: string): [number, number] {
    const min = this.count(s, minKey, path) ?? 0;
    const max = this.count(s, maxKey, path) ?? Infinity;
    if (min > max) throw new UserError(`JSON schema at ${path}: ${minKey} ${min} > ${maxKey} ${max}`);
    return [min, max];
  }

  /** The node for one type of the schema. */
  private typed(s: Record<string, unknown>, type: TypeName, path: string): SchemaNode {
    switch (type) {
      case 'object': return this.object(s, path);
      case 'array': {
        if (Array.isArray(s.items)) throw new UserError(`unsupported JSON Schema keyword 'items' as an array (tuple) at ${path}/items`);
        const items = 'items' in s ? this.compile(s.items, `${path}/items`) : this.any;
        const [minItems, maxItems] = this.bounds(s, 'minItems', 'maxItems', path);
        return { kind: 'array', id: this.id(), items, minItems, maxItems };
      }
      case 'string': {
        const [minLength, maxLength] = this.bounds(s, 'minLength', 'maxLength', path);
        return { kind: 'string', id: this.id(), minLength, maxLength };
      }
      case 'number': return { kind: 'number', id: this.id(), integer: false };
      case 'integer': return { kind: 'number', id: this.id(), integer: true };
      case 'boolean': return this.literal(['true', 'false']);
      case 'null': return this.literal(['null']);
    }
  }

  private object(s: Record<string, unknown>, path: string): SchemaNode {
    const propsIn = s.properties ?? {};
    if (typeof propsIn !== 'object' || propsIn === null || Array.isArray(propsIn)) {
      throw new UserError(`JSON schema at ${path}/properties must be an object`);
    }
    const required = s.required ?? [];
    if (!Array.isArray(required) || required.some((r) => typeof r !== 'string')) {
      throw new UserError(`JSON schema at ${path}/required must be an array of strings`);
    }
    const req = new Set(required as string[]);
    let additional: SchemaNode | null;
    if (!('additionalProperties' in s)) additional = 'properties' in s ? null : this.any;
    else if (s.additionalProperties === false) additional = null;
    else additional = this.compile(s.additionalProperties, `${path}/additionalProperties`);

    const props: PropertySpec[] = [];
    const spec = (name: string, value: SchemaNode): PropertySpec => ({
      name, value, required: req.has(name), keyBytes: utf8.encode(JSON.stringify(name).slice(1, -1)),
    });
    for (const [name, sub] of Object.entries(propsIn as Record<string, unknown>)) {
      props.push(spec(name, this.compile(sub, `${path}/properties/${seg(name)}`)));
    }
    for (const name of req) {
      if (Object.hasOwn(propsIn, name)) continue;
      if (additional === null) {
        throw new UserError(`JSON schema at ${path}/required: '${name}' is required but additionalProperties is false and it is not in properties`);
      }
      props.push(spec(name, additional));
    }
    return { kind: 'object', id: this.id(), props, additional };
  }
}

/** Compiles a JSON Schema (the supported subset) into its schema tree. */
export function compileSchema(schema: unknown): { root: SchemaNode; compiler: SchemaCompiler } {
  const compiler = new SchemaCompiler();
  return { root: compiler.compile(schema), compiler };
}
