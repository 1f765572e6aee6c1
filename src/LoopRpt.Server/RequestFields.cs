using System.Text.Json;
using System.Text.Json.Nodes;

namespace LoopRpt.Server;

/// <summary>
/// The request fields each route accepts, in one place (docs/serving.md, "Fields"). A field is either read (the
/// endpoint acts on it), metadata (OpenAI's own fields that change nothing in a reply, e.g. <c>user</c>), or accepted
/// only at the value that asks for nothing (e.g. <c>best_of</c> = 1, <c>tools</c> = []); every other field, and every other
/// value of those, is refused with HTTP 400 naming it in <c>param</c>. A JSON <c>null</c> counts as absent.
/// </summary>
internal static class RequestFields
{
    /// <summary>How a route treats one field: <paramref name="Neutral"/> null = any value (read or metadata).</summary>
    /// <param name="Neutral">The values accepted (null: any); others are refused as not supported.</param>
    /// <param name="Accepts">What <paramref name="Neutral"/> accepts, for the refusal's message.</param>
    private sealed record Rule(Func<JsonNode, bool>? Neutral = null, string? Accepts = null);

    private static readonly Rule Any = new();

    private static Rule Only(string accepts, Func<JsonNode, bool> neutral) => new(neutral, accepts);

    private static bool IsNumber(JsonNode v, double value) => v.GetValueKind() == JsonValueKind.Number && v.AsValue().TryGetValue<double>(out var d) && d == value;

    private static bool IsString(JsonNode v, params string[] values) => v.GetValueKind() == JsonValueKind.String && values.Contains((string)v!);

    private static readonly Rule One = Only("1", v => IsNumber(v, 1));
    private static readonly Rule Zero = Only("0", v => IsNumber(v, 0));
    private static readonly Rule EmptyArray = Only("[] (LoopRpt models do not call tools)", v => v is JsonArray { Count: 0 });
    private static readonly Rule EmptyObject = Only("{}", v => v is JsonObject { Count: 0 });
    private static readonly Rule Boolean = Only("true or false", v => v.GetValueKind() is JsonValueKind.True or JsonValueKind.False);

    /// <summary>OpenAI's fields that describe the request or its caller and change nothing in a reply.</summary>
    private static readonly string[] Metadata = ["user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"];

    /// <summary>The generation fields shared by chat and completions.</summary>
    private static readonly string[] Generation = ["model", "max_tokens", "temperature", "top_p", "seed", "stop", "stream", "stream_options", "exit_threshold"];

    private static Dictionary<string, Rule> Fields(IEnumerable<string> read, params (string Name, Rule Rule)[] limited)
    {
        var fields = read.ToDictionary(name => name, _ => Any, StringComparer.Ordinal);
        foreach (var (name, rule) in limited) fields[name] = rule;
        return fields;
    }

    /// <summary>The fields of every route that takes a body, by route name.</summary>
    private static readonly Dictionary<string, Dictionary<string, Rule>> Routes = new()
    {
        ["chat"] = Fields([.. Generation, "messages", "max_completion_tokens", "n", "logprobs", "top_logprobs", .. Metadata],
            ("tools", EmptyArray),
            ("functions", EmptyArray),
            ("tool_choice", Only("\"none\" (LoopRpt models do not call tools)", v => IsString(v, "none"))),
            ("function_call", Only("\"none\" (LoopRpt models do not call tools)", v => IsString(v, "none"))),
            ("parallel_tool_calls", Boolean),
            ("response_format", Only("{\"type\": \"text\"} (LoopRpt does not constrain output to JSON)", v => v is JsonObject { Count: 1 } o && o["type"] is { } t && IsString(t, "text"))),
            ("modalities", Only("[\"text\"]", v => v is JsonArray { Count: 1 } a && a[0] is { } m && IsString(m, "text"))),
            ("presence_penalty", Zero),
            ("frequency_penalty", Zero),
            ("logit_bias", EmptyObject)),
        ["completions"] = Fields([.. Generation, "prompt", "n", "echo", "logprobs", "user"],
            ("best_of", One),
            ("suffix", Only("\"\"", v => IsString(v, ""))),
            ("presence_penalty", Zero),
            ("frequency_penalty", Zero),
            ("logit_bias", EmptyObject)),
        ["embeddings"] = Fields(["model", "input", "encoding_format", "dimensions", "exit_threshold", "user"]),
        ["score"] = Fields(["model", "input", "exit_threshold", "user"]),
    };

    /// <summary>The keys a <c>stream_options</c> object may hold (<c>include_obfuscation</c> asks for padding LoopRpt never adds).</summary>
    public static readonly string[] StreamOptions = ["include_usage", "include_obfuscation"];

    /// <summary>The keys a <c>messages</c> item may hold with any value; the others listed in <see cref="MessageNeutral"/> only when empty.</summary>
    public static readonly string[] MessageFields = ["role", "content"];

    /// <summary>Message keys accepted only when null or empty (LoopRpt renders role and content only).</summary>
    public static readonly string[] MessageNeutral = ["name", "tool_calls", "tool_call_id", "function_call", "refusal", "audio"];

    /// <summary>The names of the fields <paramref name="route"/> reads or accepts (for the docs and tests).</summary>
    public static IReadOnlyCollection<string> Of(string route) => Routes[route].Keys;

    /// <summary>Refuses (HTTP 400, <c>param</c> = the field) any field of <paramref name="body"/> that <paramref name="route"/> does not implement.</summary>
    public static void Check(JsonObject body, string route)
    {
        var fields = Routes[route];
        foreach (var (name, value) in body)
        {
            if (value is null || value.GetValueKind() == JsonValueKind.Null) continue;
            if (!fields.TryGetValue(name, out var rule))
                throw new ApiError(400, $"The field '{name}' is not supported by LoopRpt's server on this route; see docs/serving.md for the fields it accepts.",
                    param: name, code: "unsupported_parameter");
            if (rule.Neutral is { } neutral && !neutral(value))
                throw new ApiError(400, $"{name} = {value.ToJsonString()} is not supported by LoopRpt's server; it accepts only {rule.Accepts} (or leaving it out).",
                    param: name, code: "unsupported_value");
        }
    }
}
