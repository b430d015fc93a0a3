using RecurFormer.StructuredOutput.Grammars;
using RecurFormer.StructuredOutput.Regex;

namespace RecurFormer.StructuredOutput.Json;

/// <summary>
/// The pieces of JSON as byte-level grammar: whitespace, strings, numbers, and the rules of any JSON value (for
/// <c>json_object</c>, <c>{}</c> schemas and untyped values). Whitespace between tokens is what llama.cpp's JSON
/// grammar allows — nothing, one space, or a newline and up to 20 spaces or tabs — so that a model can indent but
/// cannot loop on whitespace.
/// </summary>
public static class JsonGrammar
{
    public const string ValueRule = "json_value";
    public const string ObjectRule = "json_object";
    public const string ArrayRule = "json_array";
    public const string StringRule = "json_string";

    /// <summary>Most digits of an integer part or a fraction (beyond this, numbers lose precision in most parsers anyway).</summary>
    public const int MaxDigits = 15;

    public static readonly Node Whitespace = Node.Alt(
        Node.Empty,
        Node.Literal(" "),
        Node.Seq(Node.Literal("\n"), new RepeatNode(new ByteSetNode(ByteSet.Of((byte)' ').Union(ByteSet.Of((byte)'\t'))), 0, 20)));

    private static readonly ByteSet HexDigit = ByteSet.Range('0', '9').Union(ByteSet.Range('a', 'f')).Union(ByteSet.Range('A', 'F'));

    /// <summary>
    /// One character inside a JSON string: printable ASCII but <c>"</c> and <c>\</c>, any non-ASCII character as UTF-8,
    /// or an escape (<c>\uXXXX</c> limited to non-surrogates, so that every output decodes).
    /// </summary>
    public static readonly Node StringChar = Node.Alt(
        Utf8.Ranges([(0x20, 0x21), (0x23, 0x5B), (0x5D, Utf8.MaxCodePoint)]),
        Node.Seq(Node.Literal("\\"), Node.Alt(
            new ByteSetNode(ByteSet.Of((byte)'"').Union(ByteSet.Of((byte)'\\')).Union(ByteSet.Of((byte)'/'))
                .Union(ByteSet.Of((byte)'b')).Union(ByteSet.Of((byte)'f')).Union(ByteSet.Of((byte)'n')).Union(ByteSet.Of((byte)'r')).Union(ByteSet.Of((byte)'t'))),
            Node.Seq(Node.Literal("u"), Node.Alt(
                Node.Seq(new ByteSetNode(HexDigit.Except(ByteSet.Of((byte)'d')).Except(ByteSet.Of((byte)'D'))), new ByteSetNode(HexDigit)),
                Node.Seq(new ByteSetNode(ByteSet.Of((byte)'d').Union(ByteSet.Of((byte)'D'))), new ByteSetNode(ByteSet.Range('0', '7')))),
                new ByteSetNode(HexDigit), new ByteSetNode(HexDigit)))));

    private static readonly Node Quote = Node.Literal("\"");

    public static Node String(int minLength = 0, int maxLength = RepeatNode.Unbounded) =>
        Node.Seq(Quote, new RepeatNode(StringChar, minLength, maxLength), Quote);

    /// <summary>A string whose characters (decoded) form <paramref name="content"/>, already JSON-escaped bytes.</summary>
    public static Node StringOf(Node content) => Node.Seq(Quote, content, Quote);

    private static readonly Node Digit = new ByteSetNode(ByteSet.Range('0', '9'));
    private static readonly Node NonZeroDigit = new ByteSetNode(ByteSet.Range('1', '9'));

    /// <summary><c>-?(0|[1-9][0-9]{0,14})</c>.</summary>
    public static readonly Node Integer = Node.Seq(Node.Optional(Node.Literal("-")),
        Node.Alt(Node.Literal("0"), Node.Seq(NonZeroDigit, new RepeatNode(Digit, 0, MaxDigits - 1))));

    public static readonly Node Number = Node.Seq(Integer,
        Node.Optional(Node.Seq(Node.Literal("."), new RepeatNode(Digit, 1, MaxDigits))),
        Node.Optional(Node.Seq(new ByteSetNode(ByteSet.Of((byte)'e').Union(ByteSet.Of((byte)'E'))),
            Node.Optional(new ByteSetNode(ByteSet.Of((byte)'+').Union(ByteSet.Of((byte)'-')))), new RepeatNode(Digit, 1, 3))));

    public static readonly Node Boolean = Node.Alt(Node.Literal("true"), Node.Literal("false"));

    public static readonly Node Null = Node.Literal("null");

    /// <summary>An object: <c>{</c>, members separated by commas, <c>}</c>; <paramref name="member"/> is key, colon and value.</summary>
    public static Node Object(Node member) => Node.Seq(Node.Literal("{"), Whitespace,
        Node.Optional(Node.Seq(member, Node.Star(Node.Seq(Node.Literal(","), Whitespace, member)), Whitespace)), Node.Literal("}"));

    public static Node Member(Node key, Node value) => Node.Seq(key, Node.Literal(":"), Whitespace, value);

    /// <summary>An array of <paramref name="minItems"/> to <paramref name="maxItems"/> items.</summary>
    public static Node Array(Node item, int minItems = 0, int maxItems = RepeatNode.Unbounded)
    {
        var open = Node.Seq(Node.Literal("["), Whitespace);
        var close = Node.Literal("]");
        if (maxItems == 0)
        {
            return Node.Seq(open, close);
        }
        var more = new RepeatNode(Node.Seq(Node.Literal(","), Whitespace, item), Math.Max(0, minItems - 1),
            maxItems == RepeatNode.Unbounded ? RepeatNode.Unbounded : maxItems - 1);
        var items = Node.Seq(item, more, Whitespace);
        return Node.Seq(open, minItems == 0 ? Node.Optional(items) : items, close);
    }

    /// <summary>The rules of any JSON value, to add to a grammar that calls <see cref="ValueRule"/> or <see cref="ObjectRule"/>.</summary>
    public static void AddAnyValueRules(IDictionary<string, Node> rules)
    {
        if (rules.ContainsKey(ValueRule))
        {
            return;
        }
        var value = new RuleNode(ValueRule);
        var key = new RuleNode(StringRule);
        rules[StringRule] = String();
        rules[ObjectRule] = Object(Member(key, value));
        rules[ArrayRule] = Array(value);
        rules[ValueRule] = Node.Alt(new RuleNode(ObjectRule), new RuleNode(ArrayRule), key, Number, Boolean, Null);
    }

    /// <summary>A JSON value written exactly (for <c>const</c> and <c>enum</c>): its compact serialization.</summary>
    public static Node Exactly(System.Text.Json.JsonElement value) =>
        Node.Literal(System.Text.Json.JsonSerializer.Serialize(value, CompactJson));

    /// <summary>A property name as a JSON string literal.</summary>
    public static Node Key(string name) => Node.Literal(System.Text.Json.JsonSerializer.Serialize(name, CompactJson));

    internal static readonly System.Text.Json.JsonSerializerOptions CompactJson = new()
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        WriteIndented = false,
    };

    /// <summary>Characters of a string matching <paramref name="pattern"/> (JSON Schema search semantics), quotes included.</summary>
    public static Node PatternString(string pattern) => StringOf(RegexCompiler.Search(pattern));
}
