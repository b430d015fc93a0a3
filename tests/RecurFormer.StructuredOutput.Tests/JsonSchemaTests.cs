using System.Text.Json;
using System.Text.Json.Nodes;
using Json.Schema;
using RecurFormer.StructuredOutput.Matching;

namespace RecurFormer.StructuredOutput.Tests;

/// <summary>
/// Schemas as clients send them (Pydantic, zod, OpenAI strict, hand-written), walked at random through the demo
/// vocabulary's masks: every walk that completes is JSON that validates against the schema (JsonSchema.Net, formats
/// checked), and every walk completes within its token budget.
/// </summary>
public sealed class JsonSchemaTests
{
    public static TheoryData<string, string> Schemas => new()
    {
        { "zod object", """{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"tags":{"type":"array","items":{"type":"string"}}},"required":["name","age","tags"],"additionalProperties":false}""" },
        { "optional properties", """{"type":"object","properties":{"a":{"type":"boolean"},"b":{"type":"number"},"c":{"type":"null"},"d":{"type":"string"}},"required":["c"]}""" },
        { "all optional", """{"type":"object","properties":{"x":{"type":"integer"},"y":{"type":"integer"}}}""" },
        { "pydantic optional and enum", """{"$defs":{"Color":{"enum":["red","green","blue"],"title":"Color","type":"string"}},"properties":{"color":{"$ref":"#/$defs/Color"},"note":{"anyOf":[{"type":"string"},{"type":"null"}],"default":null,"title":"Note"}},"required":["color"],"title":"Paint","type":"object"}""" },
        { "integer ranges", """{"type":"object","properties":{"percent":{"type":"integer","minimum":0,"maximum":100},"delta":{"type":"integer","minimum":-15,"exclusiveMaximum":7},"year":{"type":"integer","minimum":1900,"maximum":2100}},"required":["percent","delta","year"]}""" },
        { "string lengths and formats", """{"type":"object","properties":{"code":{"type":"string","minLength":2,"maxLength":4},"when":{"type":"string","format":"date-time"},"day":{"type":"string","format":"date"},"id":{"type":"string","format":"uuid"},"mail":{"type":"string","format":"email"},"ip":{"type":"string","format":"ipv4"}},"required":["code","when","day","id","mail","ip"]}""" },
        { "pattern", """{"type":"object","properties":{"sku":{"type":"string","pattern":"^[A-Z]{3}-[0-9]{2,4}$"},"loose":{"type":"string","pattern":"a\"b"}},"required":["sku","loose"]}""" },
        { "recursive tree", """{"$defs":{"node":{"type":"object","properties":{"value":{"type":"integer"},"children":{"type":"array","items":{"$ref":"#/$defs/node"},"maxItems":2}},"required":["value"]}},"$ref":"#/$defs/node"}""" },
        { "tuple", """{"type":"array","prefixItems":[{"type":"string"},{"type":"integer"}],"items":false,"minItems":1}""" },
        { "array bounds", """{"type":"array","items":{"type":"integer","minimum":0,"maximum":9},"minItems":2,"maxItems":3}""" },
        { "map", """{"type":"object","additionalProperties":{"type":"integer"}}""" },
        { "any value", """{}""" },
        { "type list", """{"type":["string","integer","null"]}""" },
        { "const and a nullable type", """{"type":"object","properties":{"kind":{"const":"circle"},"r":{"type":["number","null"]}},"required":["kind","r"]}""" },
        { "allOf", """{"allOf":[{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]},{"properties":{"b":{"type":"integer"}},"required":["b"]}]}""" },
        { "oneOf discriminated", """{"oneOf":[{"type":"object","properties":{"type":{"const":"cat"},"lives":{"type":"integer"}},"required":["type","lives"],"additionalProperties":false},{"type":"object","properties":{"type":{"const":"dog"},"good":{"type":"boolean"}},"required":["type","good"],"additionalProperties":false}]}""" },
        { "property names needing escapes", """{"type":"object","properties":{"quote\"d":{"type":"string"},"slash/and~tilde":{"type":"integer"},"ünï":{"type":"boolean"}},"required":["quote\"d","slash/and~tilde","ünï"]}""" },
    };

    [Theory]
    [MemberData(nameof(Schemas))]
    public void RandomWalks_CompleteAndValidate(string name, string schemaText)
    {
        using var document = JsonDocument.Parse(schemaText);
        var matcher = Walks.Matcher(OutputGrammars.JsonSchema(document.RootElement));
        var validator = JsonSchema.FromText(schemaText);
        var options = new EvaluationOptions { RequireFormatValidation = true, OutputFormat = OutputFormat.List };
        for (var seed = 0; seed < 25; seed++)
        {
            var (text, complete, _) = Walks.Walk(matcher, seed, maxTokens: 160);
            Assert.True(complete, $"{name}, seed {seed}: the walk did not complete: {text}");
            var node = JsonNode.Parse(text);
            var result = validator.Evaluate(JsonSerializer.SerializeToElement(node), options);
            Assert.True(result.IsValid, $"{name}, seed {seed}: {text} does not validate: {JsonSerializer.Serialize(result.Details?.Where(d => d.Errors is not null).SelectMany(d => d.Errors!).Take(3))}");
        }
    }

    [Fact]
    public void OpenApiNullable_AddsNull()
    {
        using var document = JsonDocument.Parse("""{"type":"integer","nullable":true}""");
        var matcher = Walks.Matcher(OutputGrammars.JsonSchema(document.RootElement));
        Assert.True(matcher.IsAccepting(matcher.AdvanceBytes(matcher.Initial, "null"u8)));
        Assert.True(matcher.IsAccepting(matcher.AdvanceBytes(matcher.Initial, "42"u8)));
        Assert.Equal(-1, matcher.AdvanceBytes(matcher.Initial, "\"x"u8));
    }

    [Fact]
    public void JsonObject_IsAnObjectOfAnything()
    {
        var matcher = Walks.Matcher(OutputGrammars.JsonObject());
        for (var seed = 0; seed < 25; seed++)
        {
            var (text, complete, _) = Walks.Walk(matcher, seed, maxTokens: 120);
            Assert.True(complete, text);
            Assert.Equal(JsonValueKind.Object, JsonDocument.Parse(text).RootElement.ValueKind);
        }
    }

    [Fact]
    public void TheFirstTokens_AreForcedByTheSchema()
    {
        using var document = JsonDocument.Parse("""{"type":"object","properties":{"location":{"type":"string"}},"required":["location"],"additionalProperties":false}""");
        var matcher = Walks.Matcher(OutputGrammars.JsonSchema(document.RootElement));
        var allowed = Walks.AllowedStrings(matcher, matcher.Initial, Walks.DemoVocabulary);
        Assert.All(allowed, token => Assert.StartsWith("{", token));
        var state = matcher.AdvanceBytes(matcher.Initial, "{\"loc"u8);
        Assert.All(Walks.AllowedStrings(matcher, state, Walks.DemoVocabulary), token => Assert.True("ation\": ".StartsWith(token, StringComparison.Ordinal) || "ation\":".StartsWith(token, StringComparison.Ordinal), token));
    }

    [Theory]
    [InlineData("""{"type":"object","properties":{"a":{"not":{"type":"string"}}}}""", "'not'")]
    [InlineData("""{"type":"number","minimum":0.5}""", "'minimum' on a number")]
    [InlineData("""{"type":"array","items":{"type":"string"},"uniqueItems":true}""", "'uniqueItems'")]
    [InlineData("""{"$ref":"https://example.com/schema.json"}""", "only local references")]
    [InlineData("""{"$ref":"#/$defs/missing"}""", "points nowhere")]
    [InlineData("""{"$ref":"#"}""", "no finite output")]
    [InlineData("""{"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"}""", "no finite output")]
    [InlineData("""{"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"},{"type":"null"}]}},"$ref":"#/$defs/a"}""", "left-recursive")]
    [InlineData("""{"type":"object","properties":{"next":{"$ref":"#"}},"required":["next"]}""", "no finite output")]
    [InlineData("""{"type":"wizard"}""", "unknown type 'wizard'")]
    [InlineData("""{"type":"string","maxLength":1,"minLength":3}""", "'maxLength' is below 'minLength'")]
    [InlineData("""{"type":"string","pattern":"(a)\\1"}""", "backreferences")]
    [InlineData("""{"type":"string","pattern":"[a-"}""", "missing ']'")]
    [InlineData("""false""", "admits no value")]
    [InlineData("""{"type":"integer","minimum":5,"maximum":4}""", "no integer")]
    [InlineData("""{"type":"object","properties":{"a":{"type":"string"}},"patternProperties":{"^x":{}}}""", "'patternProperties'")]
    public void UnsupportedOrInvalidSchemas_AreRefusedNamingTheProblem(string schema, string expected)
    {
        using var document = JsonDocument.Parse(schema);
        var error = Assert.Throws<StructuredOutputException>(() => Walks.Matcher(OutputGrammars.JsonSchema(document.RootElement)));
        Assert.Contains(expected, error.Message);
    }

    [Fact]
    public void AHugeSchema_IsRefusedAsTooLarge_NotBuiltWithoutBound()
    {
        // 40,000 enum strings of 25 characters: about 1 MB of schema.
        var values = Enumerable.Range(0, 40_000).Select(i => $"value-{i:D6}-abcdefghijklmno");
        var schema = JsonSerializer.Serialize(new { type = "string", @enum = values });
        Assert.True(schema.Length > 1_000_000);
        using var document = JsonDocument.Parse(schema);
        Assert.Contains("too large", Assert.Throws<StructuredOutputException>(() => Walks.Matcher(OutputGrammars.JsonSchema(document.RootElement))).Message);
    }

    [Fact]
    public void TheTokenBudget_ClosesAnEndlessString()
    {
        using var document = JsonDocument.Parse("""{"type":"object","properties":{"essay":{"type":"string"},"n":{"type":"integer"}},"required":["essay","n"]}""");
        var matcher = Walks.Matcher(OutputGrammars.JsonSchema(document.RootElement));
        for (var seed = 0; seed < 10; seed++)
        {
            // Never stopping voluntarily: only the budget can end it.
            var (text, complete, tokens) = Walks.Walk(matcher, seed, maxTokens: 40, stopWhenPossible: 0);
            Assert.True(complete, text);
            Assert.True(tokens <= 40);
            Assert.Equal(JsonValueKind.Number, JsonDocument.Parse(text).RootElement.GetProperty("n").ValueKind);
        }
    }
}
