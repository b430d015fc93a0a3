using System.Globalization;
using System.Text.Json;
using RecurFormer.StructuredOutput.Grammars;
using RecurFormer.StructuredOutput.Regex;

namespace RecurFormer.StructuredOutput.Json;

/// <summary>
/// JSON Schema (draft 2020-12 and the OpenAPI/Pydantic/zod dialects clients send) to grammar. Properties are
/// written in the schema's order; optional ones may be left out; no property outside <c>properties</c> is ever
/// written. Every keyword that constrains values is either enforced or refused with a message naming it and
/// where it is, so that every output that completes validates against the schema:
/// <list type="bullet">
/// <item>enforced: type (one or a list), enum, const, anyOf, oneOf (as anyOf), allOf of object schemas, $ref (local,
/// recursive allowed), properties, required, additionalProperties, items, prefixItems, minItems, maxItems,
/// minLength, maxLength, pattern, format (date-time, date, time, uuid, email, ipv4, hostname), integer minimum /
/// maximum / exclusiveMinimum / exclusiveMaximum, nullable;</item>
/// <item>refused: not, if/then/else, dependentSchemas, dependentRequired, patternProperties, propertyNames,
/// minProperties/maxProperties that could fail, contains, uniqueItems that could fail, multipleOf, number ranges,
/// remote $ref.</item>
/// </list>
/// Annotations (title, description, default, examples, …) and unknown keywords are ignored, as JSON Schema says.
/// </summary>
public sealed class JsonSchemaCompiler
{
    private const int MaxNesting = 64;

    private static readonly HashSet<string> Refused =
    [
        "not", "if", "then", "else", "dependentSchemas", "dependentRequired", "dependencies", "patternProperties",
        "propertyNames", "contains", "minContains", "maxContains", "multipleOf", "$dynamicRef", "$recursiveRef",
        "unevaluatedItems", "additionalItems",
    ];

    private readonly JsonElement _document;
    private readonly Dictionary<string, Node> _rules = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _refRules = new(StringComparer.Ordinal);
    private int _nesting;
    private int _ruleCount;

    private JsonSchemaCompiler(JsonElement document) => _document = document;

    /// <summary>The grammar of the JSON values <paramref name="schema"/> accepts.</summary>
    public static GrammarDefinition Compile(JsonElement schema)
    {
        var compiler = new JsonSchemaCompiler(schema);
        var root = compiler.Schema(schema, "#");
        compiler._rules["root"] = root;
        return new GrammarDefinition(compiler._rules, "root");
    }

    /// <summary>Any JSON object (OpenAI's <c>json_object</c> response format).</summary>
    public static GrammarDefinition AnyObject()
    {
        var rules = new Dictionary<string, Node>(StringComparer.Ordinal) { ["root"] = new RuleNode(JsonGrammar.ObjectRule) };
        JsonGrammar.AddAnyValueRules(rules);
        return new GrammarDefinition(rules, "root");
    }

    /// <summary>Compiles a schema into this compiler's rules and returns its node (for grammars that embed schemas, e.g. tool calls).</summary>
    internal static Node Embed(JsonElement schema, IDictionary<string, Node> rules, string prefix)
    {
        var compiler = new JsonSchemaCompiler(schema) { _rulePrefix = prefix };
        var node = compiler.Schema(schema, "#");
        foreach (var (name, rule) in compiler._rules)
        {
            rules[name] = rule;
        }
        return node;
    }

    private string _rulePrefix = "";

    private string NewRuleName(string hint) => $"{_rulePrefix}{hint}#{_ruleCount++}";

    private Node Any()
    {
        JsonGrammar.AddAnyValueRules(_rules);
        return new RuleNode(JsonGrammar.ValueRule);
    }

    private static StructuredOutputException Error(string message, string path) => new(message, path);

    private Node Schema(JsonElement schema, string path)
    {
        if (++_nesting > MaxNesting)
        {
            throw Error($"the schema nests deeper than {MaxNesting} levels", path);
        }
        try
        {
            return SchemaCore(schema, path);
        }
        finally
        {
            _nesting--;
        }
    }

    private Node SchemaCore(JsonElement schema, string path)
    {
        switch (schema.ValueKind)
        {
            case JsonValueKind.True:
                return Any();
            case JsonValueKind.False:
                throw Error("the schema 'false' admits no value", path);
            case JsonValueKind.Object:
                break;
            default:
                throw Error($"a schema must be an object or a boolean, not {Kind(schema)}", path);
        }
        foreach (var property in schema.EnumerateObject())
        {
            if (Refused.Contains(property.Name))
            {
                throw Error($"the keyword '{property.Name}' is not supported for structured output", $"{path}/{property.Name}");
            }
        }
        if (schema.TryGetProperty("$ref", out var reference))
        {
            var target = Reference(reference, $"{path}/$ref");
            return WithNullable(schema, target);
        }
        if (schema.TryGetProperty("const", out var constant))
        {
            return JsonGrammar.Exactly(constant);
        }
        if (schema.TryGetProperty("enum", out var values))
        {
            if (values.ValueKind != JsonValueKind.Array || values.GetArrayLength() == 0)
            {
                throw Error("'enum' must be a non-empty array", $"{path}/enum");
            }
            return WithNullable(schema, Node.Alt(values.EnumerateArray().Select(JsonGrammar.Exactly).Distinct().ToArray()));
        }
        if (schema.TryGetProperty("anyOf", out var anyOf) || schema.TryGetProperty("oneOf", out anyOf))
        {
            var keyword = schema.TryGetProperty("anyOf", out _) ? "anyOf" : "oneOf";
            var options = Subschemas(anyOf, $"{path}/{keyword}");
            // Keywords beside anyOf apply to every branch (Pydantic puts 'type' or 'properties' there rarely; refuse the rest).
            return WithNullable(schema, Node.Alt(options.Select((o, i) => Schema(MergeSiblings(schema, o, keyword, $"{path}/{keyword}/{i}"), $"{path}/{keyword}/{i}")).ToArray()));
        }
        if (schema.TryGetProperty("allOf", out var allOf))
        {
            var parts = Subschemas(allOf, $"{path}/allOf");
            var merged = parts.Aggregate(WithoutKeyword(schema, "allOf"), (acc, part) => Merge(acc, Resolve(part, $"{path}/allOf"), $"{path}/allOf"));
            return Schema(merged, path);
        }
        var types = Types(schema, path);
        var nodes = types.Select(type => type switch
        {
            "object" => Object(schema, path),
            "array" => Array(schema, path),
            "string" => String(schema, path),
            "integer" => Integer(schema, path),
            "number" => Number(schema, path),
            "boolean" => JsonGrammar.Boolean,
            "null" => JsonGrammar.Null,
            "any" => Any(),
            _ => throw Error($"unknown type '{type}'", $"{path}/type"),
        }).ToArray();
        return WithNullable(schema, Node.Alt(nodes));
    }

    /// <summary>OpenAPI 3.0's <c>nullable: true</c>.</summary>
    private static Node WithNullable(JsonElement schema, Node node) =>
        schema.TryGetProperty("nullable", out var nullable) && nullable.ValueKind == JsonValueKind.True ? Node.Alt(node, JsonGrammar.Null) : node;

    private static List<string> Types(JsonElement schema, string path)
    {
        if (schema.TryGetProperty("type", out var type))
        {
            if (type.ValueKind == JsonValueKind.String)
            {
                return [type.GetString()!];
            }
            if (type.ValueKind == JsonValueKind.Array && type.GetArrayLength() > 0 && type.EnumerateArray().All(t => t.ValueKind == JsonValueKind.String))
            {
                return type.EnumerateArray().Select(t => t.GetString()!).Distinct().ToList();
            }
            throw Error("'type' must be a string or a non-empty array of strings", $"{path}/type");
        }
        bool Has(params string[] keywords) => keywords.Any(k => schema.TryGetProperty(k, out _));
        if (Has("properties", "required", "additionalProperties"))
        {
            return ["object"];
        }
        if (Has("items", "prefixItems", "minItems", "maxItems"))
        {
            return ["array"];
        }
        if (Has("pattern", "minLength", "maxLength", "format"))
        {
            return ["string"];
        }
        if (Has("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"))
        {
            return ["number"];
        }
        return ["any"];
    }

    private Node Reference(JsonElement reference, string path)
    {
        if (reference.ValueKind != JsonValueKind.String)
        {
            throw Error("'$ref' must be a string", path);
        }
        var pointer = reference.GetString()!;
        if (!pointer.StartsWith('#'))
        {
            throw Error($"only local references ('#/...') are supported, not '{pointer}'", path);
        }
        if (_refRules.TryGetValue(pointer, out var existing))
        {
            return new RuleNode(existing);
        }
        var target = ResolvePointer(pointer, path);
        var name = NewRuleName("ref:" + pointer);
        _refRules[pointer] = name;
        _rules[name] = Node.Empty; // placeholder: a recursive reference finds the name while the body compiles
        _rules[name] = Schema(target, pointer);
        return new RuleNode(name);
    }

    private JsonElement ResolvePointer(string pointer, string path)
    {
        var current = _document;
        var fragment = Uri.UnescapeDataString(pointer[1..]);
        if (fragment.Length == 0)
        {
            return current;
        }
        if (!fragment.StartsWith('/'))
        {
            throw Error($"'{pointer}' is not a JSON pointer (anchors are not supported)", path);
        }
        foreach (var raw in fragment[1..].Split('/'))
        {
            var token = raw.Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal);
            if (current.ValueKind == JsonValueKind.Object && current.TryGetProperty(token, out var next))
            {
                current = next;
            }
            else if (current.ValueKind == JsonValueKind.Array && int.TryParse(token, NumberStyles.None, CultureInfo.InvariantCulture, out var index) && index < current.GetArrayLength())
            {
                current = current[index];
            }
            else
            {
                throw Error($"the reference '{pointer}' points nowhere", path);
            }
        }
        return current;
    }

    /// <summary>A subschema with its <c>$ref</c> followed (for allOf merging).</summary>
    private JsonElement Resolve(JsonElement schema, string path)
    {
        for (var hops = 0; schema.ValueKind == JsonValueKind.Object && schema.TryGetProperty("$ref", out var reference) && hops < 32; hops++)
        {
            if (reference.ValueKind != JsonValueKind.String || !reference.GetString()!.StartsWith('#'))
            {
                throw Error("only local references are supported", path);
            }
            var target = ResolvePointer(reference.GetString()!, path);
            schema = Merge(WithoutKeyword(schema, "$ref"), target, path);
        }
        return schema;
    }

    private static List<JsonElement> Subschemas(JsonElement array, string path)
    {
        if (array.ValueKind != JsonValueKind.Array || array.GetArrayLength() == 0)
        {
            throw Error("must be a non-empty array of schemas", path);
        }
        return array.EnumerateArray().ToList();
    }

    /// <summary>A branch of anyOf with the keywords written beside anyOf added (e.g. a shared 'description' or 'type').</summary>
    private JsonElement MergeSiblings(JsonElement parent, JsonElement branch, string keyword, string path)
    {
        var siblings = WithoutKeyword(WithoutKeyword(WithoutKeyword(parent, keyword), "nullable"), "$defs");
        siblings = WithoutKeyword(siblings, "definitions");
        return siblings.EnumerateObject().Any() ? Merge(siblings, branch, path) : branch;
    }

    private static JsonElement WithoutKeyword(JsonElement schema, string keyword)
    {
        if (schema.ValueKind != JsonValueKind.Object || !schema.TryGetProperty(keyword, out _))
        {
            return schema;
        }
        var copy = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
        foreach (var property in schema.EnumerateObject())
        {
            if (property.Name != keyword)
            {
                copy[property.Name] = property.Value;
            }
        }
        return JsonSerializer.SerializeToElement(copy);
    }

    /// <summary>
    /// allOf as one schema: properties and required are united (a property in both is merged in turn), other keywords
    /// must agree. Enough for the allOf that generators write (a base model plus extensions, a $ref plus a description).
    /// </summary>
    private JsonElement Merge(JsonElement a, JsonElement b, string path)
    {
        if (a.ValueKind == JsonValueKind.True || (a.ValueKind == JsonValueKind.Object && !a.EnumerateObject().Any()))
        {
            return b;
        }
        if (b.ValueKind == JsonValueKind.True || (b.ValueKind == JsonValueKind.Object && !b.EnumerateObject().Any()))
        {
            return a;
        }
        if (a.ValueKind != JsonValueKind.Object || b.ValueKind != JsonValueKind.Object)
        {
            throw Error("allOf with a 'false' schema admits no value", path);
        }
        var result = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
        foreach (var property in a.EnumerateObject())
        {
            result[property.Name] = property.Value;
        }
        foreach (var property in b.EnumerateObject())
        {
            if (!result.TryGetValue(property.Name, out var existing))
            {
                result[property.Name] = property.Value;
                continue;
            }
            switch (property.Name)
            {
                case "properties":
                    var properties = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
                    foreach (var p in existing.EnumerateObject())
                    {
                        properties[p.Name] = p.Value;
                    }
                    foreach (var p in property.Value.EnumerateObject())
                    {
                        properties[p.Name] = properties.TryGetValue(p.Name, out var both) ? Merge(Resolve(both, path), Resolve(p.Value, path), $"{path}/properties/{p.Name}") : p.Value;
                    }
                    result["properties"] = JsonSerializer.SerializeToElement(properties);
                    break;
                case "required":
                    result["required"] = JsonSerializer.SerializeToElement(existing.EnumerateArray().Concat(property.Value.EnumerateArray()).Select(e => e.GetString()).Distinct().ToList());
                    break;
                case "title" or "description" or "default" or "examples" or "$defs" or "definitions" or "$schema" or "$id" or "$comment":
                    break;
                default:
                    if (existing.GetRawText() != property.Value.GetRawText())
                    {
                        throw Error($"allOf parts disagree on '{property.Name}'; merging them is not supported", path);
                    }
                    break;
            }
        }
        return JsonSerializer.SerializeToElement(result);
    }

    private Node Object(JsonElement schema, string path)
    {
        var properties = new List<(string Name, JsonElement Schema)>();
        if (schema.TryGetProperty("properties", out var declared))
        {
            if (declared.ValueKind != JsonValueKind.Object)
            {
                throw Error("'properties' must be an object", $"{path}/properties");
            }
            properties.AddRange(declared.EnumerateObject().Select(p => (p.Name, p.Value)));
        }
        var required = new HashSet<string>(StringComparer.Ordinal);
        if (schema.TryGetProperty("required", out var requiredList))
        {
            if (requiredList.ValueKind != JsonValueKind.Array || requiredList.EnumerateArray().Any(r => r.ValueKind != JsonValueKind.String))
            {
                throw Error("'required' must be an array of strings", $"{path}/required");
            }
            foreach (var name in requiredList.EnumerateArray().Select(r => r.GetString()!))
            {
                required.Add(name);
                if (properties.All(p => p.Name != name))
                {
                    properties.Add((name, JsonSerializer.SerializeToElement(true)));
                }
            }
        }
        var additional = schema.TryGetProperty("additionalProperties", out var extra) ? extra : JsonSerializer.SerializeToElement(true);
        if (schema.TryGetProperty("minProperties", out var minProperties) && minProperties.TryGetInt32(out var minCount) && minCount > required.Count
            && !(properties.Count == 0 && additional.ValueKind != JsonValueKind.False))
        {
            throw Error("'minProperties' above the number of required properties is not supported", $"{path}/minProperties");
        }
        if (schema.TryGetProperty("maxProperties", out var maxProperties) && maxProperties.TryGetInt32(out var maxCount) && maxCount < properties.Count)
        {
            throw Error("'maxProperties' below the number of declared properties is not supported", $"{path}/maxProperties");
        }

        if (properties.Count == 0)
        {
            if (additional.ValueKind == JsonValueKind.False)
            {
                return Node.Seq(Node.Literal("{"), JsonGrammar.Whitespace, Node.Literal("}"));
            }
            // A map: any keys, values of additionalProperties.
            var value = Shared(Schema(additional, $"{path}/additionalProperties"), "map-value");
            return JsonGrammar.Object(JsonGrammar.Member(JsonGrammar.String(), value));
        }

        var members = properties.Select(p => (p.Name, Member: JsonGrammar.Member(JsonGrammar.Key(p.Name), Schema(p.Schema, $"{path}/properties/{Escape(p.Name)}")))).ToList();
        var open = Node.Seq(Node.Literal("{"), JsonGrammar.Whitespace);
        var close = Node.Literal("}");
        var comma = Node.Seq(Node.Literal(","), JsonGrammar.Whitespace);
        if (members.All(m => required.Contains(m.Name)))
        {
            var items = new List<Node> { open, members[0].Member };
            foreach (var member in members.Skip(1))
            {
                items.Add(comma);
                items.Add(member.Member);
            }
            items.Add(JsonGrammar.Whitespace);
            items.Add(close);
            return Node.Seq([.. items]);
        }
        // Optional members: "after i, nothing written yet" (F) and "after i, something written" (T) as rules, so that
        // the commas come out right with a grammar linear in the number of properties (inline it would be exponential).
        var prefix = NewRuleName("object");
        string F(int i) => $"{prefix}/F{i}";
        string T(int i) => $"{prefix}/T{i}";
        _rules[F(members.Count)] = Node.Empty;
        _rules[T(members.Count)] = JsonGrammar.Whitespace;
        for (var i = members.Count - 1; i >= 0; i--)
        {
            var optional = !required.Contains(members[i].Name);
            _rules[F(i)] = optional
                ? Node.Alt(Node.Seq(members[i].Member, new RuleNode(T(i + 1))), new RuleNode(F(i + 1)))
                : Node.Seq(members[i].Member, new RuleNode(T(i + 1)));
            _rules[T(i)] = optional
                ? Node.Alt(Node.Seq(comma, members[i].Member, new RuleNode(T(i + 1))), new RuleNode(T(i + 1)))
                : Node.Seq(comma, members[i].Member, new RuleNode(T(i + 1)));
        }
        return Node.Seq(open, new RuleNode(F(0)), close);
    }

    private Node Array(JsonElement schema, string path)
    {
        var minItems = Count(schema, "minItems", path) ?? 0;
        var maxItems = Count(schema, "maxItems", path) ?? RepeatNode.Unbounded;
        if (maxItems != RepeatNode.Unbounded && maxItems < minItems)
        {
            throw Error("'maxItems' is below 'minItems'", path);
        }
        if (schema.TryGetProperty("uniqueItems", out var unique) && unique.ValueKind == JsonValueKind.True && (maxItems == RepeatNode.Unbounded || maxItems > 1))
        {
            throw Error("'uniqueItems' is not supported (unless maxItems is at most 1)", $"{path}/uniqueItems");
        }
        var prefix = new List<Node>();
        if (schema.TryGetProperty("prefixItems", out var prefixItems))
        {
            prefix.AddRange(Subschemas(prefixItems, $"{path}/prefixItems").Select((s, i) => Schema(s, $"{path}/prefixItems/{i}")));
        }
        Node? rest = null;
        if (schema.TryGetProperty("items", out var items))
        {
            if (items.ValueKind == JsonValueKind.Array)
            {
                throw Error("'items' as an array (draft 4 tuples) is not supported; use 'prefixItems'", $"{path}/items");
            }
            if (items.ValueKind != JsonValueKind.False)
            {
                rest = Schema(items, $"{path}/items");
            }
        }
        else
        {
            rest = Any();
        }
        if (prefix.Count == 0)
        {
            if (rest is null)
            {
                return minItems > 0 ? throw Error("'minItems' cannot be met when 'items' is false", path) : JsonGrammar.Array(Node.Empty, 0, 0);
            }
            return JsonGrammar.Array(Shared(rest, "item"), minItems, maxItems);
        }
        // Tuple: prefix items in order (the first minItems required), then more of 'items' if allowed.
        var comma = Node.Seq(Node.Literal(","), JsonGrammar.Whitespace);
        var count = maxItems == RepeatNode.Unbounded ? prefix.Count : Math.Min(prefix.Count, maxItems);
        if (minItems > count && rest is null)
        {
            throw Error("'minItems' cannot be met with these 'prefixItems'", path);
        }
        Node tail = Node.Empty;
        if (rest is not null && (maxItems == RepeatNode.Unbounded || maxItems > prefix.Count))
        {
            var restMin = Math.Max(0, minItems - prefix.Count);
            var restMax = maxItems == RepeatNode.Unbounded ? RepeatNode.Unbounded : maxItems - prefix.Count;
            tail = new RepeatNode(Node.Seq(comma, Shared(rest, "item")), restMin, restMax);
        }
        // Built from the end: item k is optional when k >= minItems, and everything after a missing item is missing too.
        var sequence = tail;
        for (var k = count - 1; k >= 0; k--)
        {
            var here = Node.Seq(k == 0 ? Node.Empty : comma, prefix[k], sequence);
            sequence = k >= minItems ? Node.Optional(here) : here;
        }
        return Node.Seq(Node.Literal("["), JsonGrammar.Whitespace, sequence, JsonGrammar.Whitespace, Node.Literal("]"));
    }

    private Node String(JsonElement schema, string path)
    {
        var minLength = Count(schema, "minLength", path) ?? 0;
        var maxLength = Count(schema, "maxLength", path) ?? RepeatNode.Unbounded;
        if (maxLength != RepeatNode.Unbounded && maxLength < minLength)
        {
            throw Error("'maxLength' is below 'minLength'", path);
        }
        var hasLength = minLength > 0 || maxLength != RepeatNode.Unbounded;
        if (schema.TryGetProperty("pattern", out var pattern))
        {
            if (pattern.ValueKind != JsonValueKind.String)
            {
                throw Error("'pattern' must be a string", $"{path}/pattern");
            }
            if (hasLength || schema.TryGetProperty("format", out _))
            {
                throw Error("'pattern' together with 'minLength'/'maxLength'/'format' is not supported", $"{path}/pattern");
            }
            try
            {
                return JsonGrammar.PatternString(pattern.GetString()!);
            }
            catch (StructuredOutputException error)
            {
                throw Error(error.Message, $"{path}/pattern");
            }
        }
        if (schema.TryGetProperty("format", out var format) && format.ValueKind == JsonValueKind.String && Formats.TryGetValue(format.GetString()!, out var formatPattern))
        {
            if (hasLength)
            {
                throw Error("'format' together with 'minLength'/'maxLength' is not supported", $"{path}/format");
            }
            return JsonGrammar.StringOf(RegexCompiler.FullMatch(formatPattern, CharEncoding.JsonString));
        }
        if (maxLength != RepeatNode.Unbounded && maxLength > RegexCompiler.MaxRepeat)
        {
            throw Error($"'maxLength' above {RegexCompiler.MaxRepeat} is not supported", $"{path}/maxLength");
        }
        return JsonGrammar.String(minLength, maxLength);
    }

    /// <summary>
    /// Formats that validators check, as patterns every value of which they accept (dates stop at day 28 in February
    /// and at day 30 in short months, so no impossible date can come out).
    /// </summary>
    private static readonly Dictionary<string, string> Formats = new(StringComparer.Ordinal)
    {
        ["date"] = Date,
        ["time"] = Time,
        ["date-time"] = Date + "T" + Time,
        ["uuid"] = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        ["email"] = "[a-zA-Z0-9_+-]{1,32}(\\.[a-zA-Z0-9_+-]{1,32}){0,3}@[a-zA-Z0-9]([a-zA-Z0-9-]{0,30}[a-zA-Z0-9])?(\\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,30}[a-zA-Z0-9])?){0,3}\\.[a-zA-Z]{2,12}",
        ["ipv4"] = "((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
        ["hostname"] = "[a-zA-Z0-9]([a-zA-Z0-9-]{0,30}[a-zA-Z0-9])?(\\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,30}[a-zA-Z0-9])?){0,4}",
    };

    private const string Date = "[0-9]{4}-((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)";
    private const string Time = "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])";

    private static Node Integer(JsonElement schema, string path)
    {
        long? min = Bound(schema, "minimum", path, ceiling: true);
        long? max = Bound(schema, "maximum", path, ceiling: false);
        if (Bound(schema, "exclusiveMinimum", path, ceiling: false, exclusive: true) is { } exclusiveMin)
        {
            min = Math.Max(min ?? long.MinValue, exclusiveMin + 1);
        }
        if (Bound(schema, "exclusiveMaximum", path, ceiling: true, exclusive: true) is { } exclusiveMax)
        {
            max = Math.Min(max ?? long.MaxValue, exclusiveMax - 1);
        }
        if (min is null && max is null)
        {
            return JsonGrammar.Integer;
        }
        if (min > max)
        {
            throw Error($"no integer lies between {min} and {max}", path);
        }
        return IntegerRange.Build(min, max) ?? throw Error($"integer bounds beyond {IntegerRange.Limit} are not supported", path);
    }

    private static long? Bound(JsonElement schema, string keyword, string path, bool ceiling, bool exclusive = false)
    {
        if (!schema.TryGetProperty(keyword, out var value))
        {
            return null;
        }
        if (value.ValueKind is JsonValueKind.True or JsonValueKind.False && exclusive)
        {
            throw Error($"boolean '{keyword}' (draft 4) is not supported; give the bound as a number", $"{path}/{keyword}");
        }
        if (value.ValueKind != JsonValueKind.Number)
        {
            throw Error($"'{keyword}' must be a number", $"{path}/{keyword}");
        }
        var number = value.GetDouble();
        var rounded = ceiling ? Math.Ceiling(number) : Math.Floor(number);
        if (Math.Abs(rounded) > IntegerRange.Limit)
        {
            throw Error($"'{keyword}' beyond ±{IntegerRange.Limit} is not supported", $"{path}/{keyword}");
        }
        return (long)rounded;
    }

    private static Node Number(JsonElement schema, string path)
    {
        foreach (var keyword in new[] { "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum" })
        {
            if (schema.TryGetProperty(keyword, out _))
            {
                throw Error($"'{keyword}' on a number is not supported (it is on an integer)", $"{path}/{keyword}");
            }
        }
        return JsonGrammar.Number;
    }

    private static int? Count(JsonElement schema, string keyword, string path)
    {
        if (!schema.TryGetProperty(keyword, out var value))
        {
            return null;
        }
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt64(out var count) || count < 0)
        {
            throw Error($"'{keyword}' must be a non-negative integer", $"{path}/{keyword}");
        }
        return (int)Math.Min(count, int.MaxValue - 1);
    }

    /// <summary>A large sub-grammar used several times (array items, map values) becomes a rule, so copies cost one call each.</summary>
    private Node Shared(Node node, string hint)
    {
        if (node is RuleNode || Size(node, 0) <= 48)
        {
            return node;
        }
        var name = NewRuleName(hint);
        _rules[name] = node;
        return new RuleNode(name);
    }

    private static int Size(Node node, int acc)
    {
        if (acc > 48)
        {
            return acc;
        }
        return node switch
        {
            SeqNode s => s.Items.Aggregate(acc, (a, n) => Size(n, a)),
            AltNode a => a.Options.Aggregate(acc, (x, n) => Size(n, x)),
            RepeatNode r => Size(r.Item, acc) * 2,
            _ => acc + 1,
        };
    }

    private static string Escape(string name) => name.Replace("~", "~0", StringComparison.Ordinal).Replace("/", "~1", StringComparison.Ordinal);

    private static string Kind(JsonElement e) => e.ValueKind.ToString().ToLowerInvariant();
}
