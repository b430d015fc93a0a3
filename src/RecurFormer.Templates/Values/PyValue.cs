using System.Collections;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace RecurFormer.Templates.Values;

/// <summary>Turns .NET values callers hold (JSON elements and nodes, strings, numbers, dictionaries, lists) into template values.</summary>
public static class PyValue
{
    public static object? From(object? value) => value switch
    {
        null => null,
        string or bool or long or double or PyDict or PyTuple or Namespace or PyCallable or Undefined => value,
        List<object?> list => list,
        int i => (long)i,
        short s => (long)s,
        byte b => (long)b,
        uint u => (long)u,
        float f => (double)f,
        decimal m => (double)m,
        JsonElement element => PyJson.FromJson(element),
        JsonNode node => PyJson.FromJson(node),
        IDictionary dictionary => FromDictionary(dictionary),
        IEnumerable sequence => sequence.Cast<object?>().Select(From).ToList(),
        _ => throw new ArgumentException($"cannot pass a {value.GetType().Name} to a template"),
    };

    private static PyDict FromDictionary(IDictionary dictionary)
    {
        var dict = new PyDict();
        foreach (DictionaryEntry entry in dictionary)
        {
            dict.Set(From(entry.Key), From(entry.Value));
        }
        return dict;
    }
}
