// Serving benchmark (issue 26, docs/serving.md "Benchmark"): starts LoopRpt's OpenAI-compatible server in this process
// on a tiny random model (or --model DIR) and drives it over HTTP with the official OpenAI .NET client.
//   arrival: streamed chat requests arriving at a steady --rate per second; time to first token and latency p50/p95.
//   load:    --callers closed-loop callers sending --requests requests of the --mix; failures, p50/p95, tokens/s greedy
//            and sampled, RSS before and after.
// Usage: dotnet run -c Release --project examples/ServeBenchmark -- --help
using System.ClientModel;
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using LoopRpt.AI;
using LoopRpt.Inference;
using LoopRpt.Model;
using LoopRpt.Native;
using LoopRpt.Server;
using LoopRpt.Tokenization;
using OpenAI;
using OpenAI.Chat;
using static TorchSharp.torch;

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
Thread.CurrentThread.CurrentCulture = CultureInfo.InvariantCulture;
var opt = Options.Parse(args);
if (opt is null) return 0;
TorchNative.EnsureLoaded();
if (opt.Threads > 0) set_num_threads(opt.Threads);

// --url: drive a server that runs elsewhere (e.g. `looprpt serve --store DIR` while `looprpt store publish` swaps its
// model); otherwise the server runs in this process.
using var model = opt.Url is not null ? null : opt.Model is { } dir ? LoopRptModel.Load(dir) : TinyModel(opt.Seed);
var server = new LoopRptServerOptions { Urls = "http://127.0.0.1:0", MaxConcurrentRequests = Math.Max(64, 4 * opt.Callers), RequestTimeoutSeconds = 600 };
await using var app = model is null ? null : LoopRptServer.Build(model, server, new LoopRptChatClientOptions { BatchSize = opt.Batch, JoinRunningBatch = !opt.NoJoin });
if (app is not null) await app.StartAsync();
var root = new Uri(app?.Addresses()[0] ?? opt.Url!);
var openai = new OpenAIClient(new ApiKeyCredential(opt.ApiKey ?? "unused"), new OpenAIClientOptions { Endpoint = new Uri(root, "/v1"), NetworkTimeout = TimeSpan.FromMinutes(10) });
using var http = new HttpClient { BaseAddress = root, Timeout = TimeSpan.FromMinutes(10) };
if (opt.ApiKey is not null) http.DefaultRequestHeaders.Authorization = new("Bearer", opt.ApiKey);
var modelId = model?.ModelId ?? (string)JsonNode.Parse(await http.GetStringAsync("/v1/models"))!["data"]![0]!["id"]!;
var chat = openai.GetChatClient(modelId);
var embeddings = openai.GetEmbeddingClient(modelId);
// Replies per system_fingerprint (the model version that answered), over the load scenario.
var fingerprints = new System.Collections.Concurrent.ConcurrentDictionary<string, int>();
void Seen(string? fingerprint) => fingerprints.AddOrUpdate(fingerprint ?? "(none)", 1, (_, n) => n + 1);
string[] prompts = ["hello there", "tell me about loops", "what is adaptive exit?", "count to ten", "a looped model"];

Console.WriteLine(model is null
    ? $"server: {root} (external), model {modelId}; max_tokens {opt.MaxTokens}"
    : $"model: {model.ModelId}, {model.Model.Config.NumHiddenLayers} layers x {model.Model.Config.TotalUtSteps} loops, hidden {model.Model.Config.HiddenSize}, " +
      $"context {model.Model.Config.MaxPositionEmbeddings}; server batch {opt.Batch}{(opt.NoJoin ? " (--no-join: arrivals wait for the running batch)" : "")}; " +
      $"torch threads {get_num_threads()}; max_tokens {opt.MaxTokens}");
// Warm-up: one of each kind, so the first measured request does not pay for JIT and first-use allocations.
foreach (var kind in new[] { "chat", "completions", "embeddings", "stream" }) await Send(kind, 0, sampled: false);

if (opt.Scenario is "arrival" or "both") await Arrival();
if (opt.Scenario is "load" or "both") await Load();
if (app is not null) await app.StopAsync();
return 0;

// ---- (a) steady arrival: one streamed chat every 1/rate seconds, whatever is still running -----------------------
async Task Arrival()
{
    int count = (int)Math.Max(1, Math.Round(opt.Rate * opt.Seconds));
    var ttft = new double[count];
    var latency = new double[count];
    int failures = 0;
    var clock = Stopwatch.StartNew();
    var tasks = new List<Task>();
    for (int i = 0; i < count; i++)
    {
        var due = TimeSpan.FromSeconds(i / opt.Rate);
        if (due > clock.Elapsed) await Task.Delay(due - clock.Elapsed);
        int n = i;
        tasks.Add(Task.Run(async () =>
        {
            var start = Stopwatch.GetTimestamp();
            try
            {
                var first = await StreamChat(prompts[n % prompts.Length], n, sampled: n % 2 == 1);
                ttft[n] = first * 1000;
                latency[n] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            }
            catch (Exception e)
            {
                Interlocked.Increment(ref failures);
                ttft[n] = latency[n] = double.NaN;
                Console.Error.WriteLine($"arrival {n}: {e.GetType().Name}: {e.Message}");
            }
        }));
    }
    await Task.WhenAll(tasks);
    var ok = Enumerable.Range(0, count).Where(i => !double.IsNaN(ttft[i])).ToArray();
    Console.WriteLine($"arrival: {count} streamed chat requests at {opt.Rate:0.##}/s (half greedy, half sampled), {failures} failed, {clock.Elapsed.TotalSeconds:F1} s");
    Console.WriteLine($"  time to first token ms: p50 {Pct(ok.Select(i => ttft[i]), 50):F0}  p95 {Pct(ok.Select(i => ttft[i]), 95):F0}");
    Console.WriteLine($"  latency ms:             p50 {Pct(ok.Select(i => latency[i]), 50):F0}  p95 {Pct(ok.Select(i => latency[i]), 95):F0}");
}

// ---- (b) closed-loop load: callers take the next request as soon as their last one is answered --------------------
async Task Load()
{
    long rssBefore = Rss();
    int next = -1, failures = 0;
    var latencies = new List<(string Kind, double Ms)>();
    long greedyTokens = 0, sampledTokens = 0;
    var clock = Stopwatch.StartNew();
    var callers = Enumerable.Range(0, opt.Callers).Select(_ => Task.Run(async () =>
    {
        int i;
        while ((i = Interlocked.Increment(ref next)) < opt.Requests)
        {
            var kind = opt.Mix[i % opt.Mix.Length];
            bool sampled = opt.Sampled > 0 && (i / opt.Mix.Length) % Math.Max(1, (int)Math.Round(1 / opt.Sampled)) == 0;
            var start = Stopwatch.GetTimestamp();
            try
            {
                long tokens = await Send(kind, i, sampled);
                var ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                lock (latencies) latencies.Add((kind, ms));
                Interlocked.Add(ref sampled ? ref sampledTokens : ref greedyTokens, tokens);
            }
            catch (Exception e)
            {
                Interlocked.Increment(ref failures);
                Console.Error.WriteLine($"request {i} ({kind}): {e.GetType().Name}: {e.Message}");
            }
        }
    })).ToArray();
    await Task.WhenAll(callers);
    double wall = clock.Elapsed.TotalSeconds;
    GC.Collect();
    long rssAfter = Rss();
    Console.WriteLine($"load: {opt.Requests} requests ({string.Join(",", opt.Mix)}) from {opt.Callers} callers, {failures} failed, {wall:F1} s, {opt.Requests / wall:F1} requests/s");
    Console.WriteLine($"  latency ms: p50 {Pct(latencies.Select(l => l.Ms), 50):F0}  p95 {Pct(latencies.Select(l => l.Ms), 95):F0}");
    foreach (var kind in opt.Mix)
        Console.WriteLine($"    {kind,-12} p50 {Pct(latencies.Where(l => l.Kind == kind).Select(l => l.Ms), 50):F0}  p95 {Pct(latencies.Where(l => l.Kind == kind).Select(l => l.Ms), 95):F0}");
    Console.WriteLine($"  completion tokens/s: greedy {greedyTokens / wall:F0}  sampled {sampledTokens / wall:F0}  (each over the whole run's wall time)");
    Console.WriteLine($"  server RSS MB: before {rssBefore / 1048576.0:F0}  after {rssAfter / 1048576.0:F0}");
    Console.WriteLine($"  replies by system_fingerprint: {string.Join(", ", fingerprints.OrderBy(f => f.Key).Select(f => $"{f.Key} {f.Value}"))}");
}

// One request of a kind; returns the completion tokens it produced (0 for embeddings).
async Task<long> Send(string kind, int i, bool sampled)
{
    var prompt = prompts[i % prompts.Length];
    switch (kind)
    {
        case "chat":
        {
            var reply = await chat.CompleteChatAsync([new UserChatMessage(prompt)], ChatOptions(i, sampled));
            Seen(reply.Value.SystemFingerprint);
            return reply.Value.Usage.OutputTokenCount;
        }
        case "stream":
        {
            long tokens = 0;
            var o = ChatOptions(i, sampled);
            string? fingerprint = null;
            await foreach (var u in chat.CompleteChatStreamingAsync([new UserChatMessage(prompt)], o))
            {
                fingerprint ??= u.SystemFingerprint;
                if (u.Usage is { } usage) tokens = usage.OutputTokenCount;
            }
            Seen(fingerprint);
            return tokens;
        }
        case "completions":
        {
            // The official .NET client has no legacy completions API: raw HTTP with the same JSON the other clients send.
            var body = new JsonObject { ["model"] = modelId, ["prompt"] = prompt, ["max_tokens"] = opt.MaxTokens, ["temperature"] = sampled ? 1.0 : 0.0, ["seed"] = i };
            using var response = await http.PostAsJsonAsync("/v1/completions", body);
            var text = await response.Content.ReadAsStringAsync();
            if (!response.IsSuccessStatusCode) throw new HttpRequestException($"HTTP {(int)response.StatusCode}: {text}");
            var json = JsonNode.Parse(text)!;
            Seen((string?)json["system_fingerprint"]);
            return (long?)json["usage"]!["completion_tokens"] ?? 0;
        }
        case "embeddings":
            await embeddings.GenerateEmbeddingAsync(prompt);
            return 0;
        default: throw new ArgumentException($"unknown request kind '{kind}'");
    }
}

ChatCompletionOptions ChatOptions(int i, bool sampled)
{
    var o = new ChatCompletionOptions { MaxOutputTokenCount = opt.MaxTokens, Temperature = sampled ? 1f : 0f };
#pragma warning disable OPENAI001 // Seed is marked experimental in the client
    o.Seed = i;
#pragma warning restore OPENAI001
    return o;
}

// Seconds from sending a streamed chat to its first content chunk.
async Task<double> StreamChat(string prompt, int i, bool sampled)
{
    var start = Stopwatch.GetTimestamp();
    double first = double.NaN;
    await foreach (var u in chat.CompleteChatStreamingAsync([new UserChatMessage(prompt)], ChatOptions(i, sampled)))
        if (double.IsNaN(first) && u.ContentUpdate.Count > 0) first = Stopwatch.GetElapsedTime(start).TotalSeconds;
    return double.IsNaN(first) ? Stopwatch.GetElapsedTime(start).TotalSeconds : first;
}

static double Pct(IEnumerable<double> values, double p)
{
    var sorted = values.OrderBy(v => v).ToArray();
    if (sorted.Length == 0) return double.NaN;
    return sorted[Math.Clamp((int)Math.Ceiling(p / 100 * sorted.Length) - 1, 0, sorted.Length - 1)];
}

long Rss()
{
    // The server's process: this one, or --server-pid's when --url names a server elsewhere (0 when not given).
    if (opt.Url is not null && opt.ServerPid is null) return 0;
    foreach (var line in File.ReadLines($"/proc/{opt.ServerPid?.ToString() ?? "self"}/status"))
        if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
    return 0;
}

// A random byte-level model: hidden 64, 2 layers x 4 loops, context 512 (created in well under a second).
static LoopRptModel TinyModel(int seed)
{
    var config = new OuroConfig
    {
        VocabSize = ByteTokenizer.VocabularySize, HiddenSize = 64, IntermediateSize = 176, NumHiddenLayers = 2, NumAttentionHeads = 4,
        NumKeyValueHeads = 4, TotalUtSteps = 4, RopeTheta = 10_000, MaxPositionEmbeddings = 512, EosTokenId = ByteTokenizer.EndOfTextId,
    };
    using var g = new Generator((ulong)seed);
    var lm = new OuroForCausalLM(config, generator: g);
    lm.eval();
    return LoopRptModel.FromModel(lm, TextCodec.Bytes(), "serve-bench");
}

/// <summary>Command-line options.</summary>
internal sealed record Options(string Scenario, string? Model, double Rate, double Seconds, int Callers, int Requests, string[] Mix,
    int MaxTokens, double Sampled, int Batch, int Threads, int Seed, bool NoJoin, string? Url = null, string? ApiKey = null, int? ServerPid = null)
{
    private const string Help = """
        ServeBenchmark: LoopRpt's OpenAI-compatible server in-process, driven over HTTP by the official OpenAI .NET client.
          --scenario arrival|load|both   what to run (default both)
          --model DIR                    serve this model directory (default: a tiny random byte-level model)
          --rate R                       arrival: requests per second (default 4)
          --seconds S                    arrival: how long requests keep arriving (default 15)
          --callers N                    load: concurrent closed-loop callers (default 16)
          --requests N                   load: requests in all (default 3000)
          --mix LIST                     load: request kinds in turn, from chat,completions,embeddings,stream (default all four)
          --max-tokens N                 max_tokens of every generation request (default 16)
          --sampled F                    load: fraction of generation requests sent with temperature 1 (default 0.5)
          --batch N                      server: rows decoded together (default 8)
          --no-join                      server: requests that arrive while a batch decodes wait for it to end (the
                                         scheduling before continuous batching, for before/after comparisons)
          --threads N                    torch threads (default: torch's own)
          --seed N                       seed of the tiny model (default 1)
          --url URL                      drive a server running elsewhere (e.g. `looprpt serve --store DIR`) instead of
                                         one in this process; --model, --batch and --no-join then do not apply
          --api-key KEY                  with --url: the server's API key
          --server-pid PID               with --url: the server's process, for the RSS figures
        Every generation request carries a seed (its index), so sampled replies are reproducible.
        """;

    public static Options? Parse(string[] args)
    {
        var o = new Options("both", null, 4, 15, 16, 3000, ["chat", "completions", "embeddings", "stream"], 16, 0.5, 8, 0, 1, false);
        for (int i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            double Number() => double.Parse(Value(), CultureInfo.InvariantCulture);
            o = args[i] switch
            {
                "--help" or "-h" => null,
                "--scenario" => o with { Scenario = Value() },
                "--model" => o with { Model = Value() },
                "--rate" => o with { Rate = Number() },
                "--seconds" => o with { Seconds = Number() },
                "--callers" => o with { Callers = (int)Number() },
                "--requests" => o with { Requests = (int)Number() },
                "--mix" => o with { Mix = Value().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) },
                "--max-tokens" => o with { MaxTokens = (int)Number() },
                "--sampled" => o with { Sampled = Number() },
                "--batch" => o with { Batch = (int)Number() },
                "--threads" => o with { Threads = (int)Number() },
                "--seed" => o with { Seed = (int)Number() },
                "--no-join" => o with { NoJoin = true },
                "--url" => o with { Url = Value() },
                "--api-key" => o with { ApiKey = Value() },
                "--server-pid" => o with { ServerPid = (int)Number() },
                _ => throw new ArgumentException($"unknown option {args[i]}; see --help"),
            };
            if (o is null) break;
        }
        if (o is null)
        {
            Console.WriteLine(Help);
            return null;
        }
        if (o.Scenario is not ("arrival" or "load" or "both")) throw new ArgumentException("--scenario must be arrival, load or both");
        if (!(o.Rate > 0) || !(o.Seconds > 0) || o.Callers < 1 || o.Requests < 1 || o.MaxTokens < 1 || o.Batch < 1 || o.Sampled is < 0 or > 1)
            throw new ArgumentException("--rate, --seconds, --callers, --requests, --max-tokens and --batch must be positive, --sampled in [0, 1]");
        foreach (var kind in o.Mix)
            if (kind is not ("chat" or "completions" or "embeddings" or "stream")) throw new ArgumentException($"--mix: unknown kind '{kind}'");
        if (o.Url is not null && !(Uri.TryCreate(o.Url, UriKind.Absolute, out var u) && u.Scheme is "http" or "https"))
            throw new ArgumentException($"--url must be an absolute http(s) address, not '{o.Url}'");
        if (o.Url is not null && o.Model is not null) throw new ArgumentException("--url and --model exclude each other: the server elsewhere has its model");
        if (o.ServerPid is { } pid && (o.Url is null || !Directory.Exists($"/proc/{pid}")))
            throw new ArgumentException($"--server-pid {pid}: needs --url and a running process with that id");
        return o;
    }
}
