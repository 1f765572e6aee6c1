// ChatApp: an app that takes IChatClient and IEmbeddingGenerator<string, Embedding<float>> from DI, each behind a
// Microsoft.Extensions.AI pipeline (distributed cache, logging, OpenTelemetry), and never names the model behind them.
// Switching between LoopRpt and an OpenAI-hosted model is one registration line (the `--provider` switch below).
//
//   dotnet run -c Release --project examples/ChatApp                          # offline: a tiny random LoopRpt model, made in seconds
//   dotnet run -c Release --project examples/ChatApp -- --model DIR           # a LoopRpt model directory, checkpoint root or model store
//   OPENAI_API_KEY=... dotnet run -c Release --project examples/ChatApp -- --provider openai [--openai-model gpt-4o-mini]
//   ... -- --prompt "the cat sat on"                                          # the question asked
//
// Spans and metrics go to the console, and over OTLP where OTEL_EXPORTER_OTLP_ENDPOINT is set (docs/serving.md, "ChatApp").
using System.Diagnostics;
using System.Numerics.Tensors;
using LoopRpt.AI;
using LoopRpt.Hosting;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OpenAI;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;

const string Telemetry = "ChatApp";
var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = args, ContentRootPath = AppContext.BaseDirectory });
var provider = builder.Configuration["provider"] ?? "looprpt";
var prompt = builder.Configuration["prompt"] ?? "the cat sat on";
if (provider is not ("looprpt" or "openai"))
{
    Console.Error.WriteLine($"ChatApp: --provider must be looprpt or openai, got '{provider}'.");
    return 2;
}
var apiKey = Environment.GetEnvironmentVariable("OPENAI_API_KEY");
if (provider == "openai" && string.IsNullOrWhiteSpace(apiKey))
{
    Console.Error.WriteLine("ChatApp: --provider openai needs the OPENAI_API_KEY environment variable.");
    return 2;
}
var model = provider == "looprpt" ? builder.Configuration["model"] ?? TinyModel() : null;
var openAiModel = builder.Configuration["openai-model"] ?? "gpt-4o-mini";

// The one registration line per provider: the rest of the app sees only IChatClient and IEmbeddingGenerator.
var services = builder.Services;
var (chat, embeddings) = provider switch
{
    "openai" => (services.AddChatClient(new OpenAIClient(apiKey).GetChatClient(openAiModel).AsIChatClient()), services.AddEmbeddingGenerator(new OpenAIClient(apiKey).GetEmbeddingClient("text-embedding-3-small").AsIEmbeddingGenerator())),
    _ => (services.AddLoopRptModel(model!).AddLoopRptChatClient(o => o.MaxOutputTokens = 24), services.AddLoopRptEmbeddingGenerator()),
};

// The same middleware whichever provider: a distributed cache (answers a repeated request without the model), logging, OpenTelemetry.
services.AddDistributedMemoryCache();
chat.UseDistributedCache().UseLogging().UseOpenTelemetry(sourceName: Telemetry, configure: o => o.EnableSensitiveData = true);
embeddings.UseLogging().UseOpenTelemetry(sourceName: Telemetry);
builder.Logging.AddFilter("Microsoft.Extensions.AI", LogLevel.Debug);
var otlp = !string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT"));
services.AddOpenTelemetry()
    .WithTracing(t =>
    {
        t.AddSource(Telemetry).AddConsoleExporter();
        if (otlp) t.AddOtlpExporter();
    })
    .WithMetrics(m =>
    {
        m.AddMeter(Telemetry, LoopRpt.Inference.InferenceMetrics.MeterName).AddConsoleExporter();
        if (otlp) m.AddOtlpExporter();
    });

using var host = builder.Build();
await host.StartAsync();
var client = host.Services.GetRequiredService<IChatClient>();
var generator = host.Services.GetRequiredService<IEmbeddingGenerator<string, Embedding<float>>>();
var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 24 };

var clock = Stopwatch.StartNew();
var reply = await client.GetResponseAsync(prompt, options);
Console.WriteLine($"[{provider}] {prompt} → {reply.Text}  ({clock.ElapsedMilliseconds} ms, {reply.Usage?.OutputTokenCount} tokens, model {reply.ModelId})");
clock.Restart();
var again = await client.GetResponseAsync(prompt, options);
Console.WriteLine($"[{provider}] the same request again: {clock.ElapsedMilliseconds} ms, same text: {again.Text == reply.Text} (answered by the distributed cache)");
Console.Write($"[{provider}] streamed: ");
await foreach (var update in client.GetStreamingResponseAsync($"{prompt} a", options)) Console.Write(update.Text);
Console.WriteLine();
var vectors = await generator.GenerateAsync([prompt, "a dog looked at the ball", prompt]);
Console.WriteLine($"[{provider}] embeddings of {vectors[0].Vector.Length} dimensions; cosine(prompt, other) = " +
    $"{TensorPrimitives.CosineSimilarity(vectors[0].Vector.Span, vectors[1].Vector.Span):F3}, cosine(prompt, prompt) = " +
    $"{TensorPrimitives.CosineSimilarity(vectors[0].Vector.Span, vectors[2].Vector.Span):F3}");
await host.StopAsync();
return 0;

// No --model: a tiny random LoopRpt model with the byte tokenizer, created by the hosting model store's own seeding
// (ModelStoreOptions.InitialPreset) in a temporary store; the store root opens as its current version.
static string TinyModel()
{
    var root = Path.Combine(Path.GetTempPath(), "looprpt-chatapp-tiny");
    using var store = new ModelStore(Options.Create(new ModelStoreOptions { Root = root, InitialPreset = "tiny", InitialSeed = 1 }), new ByteTokenizerService());
    store.EnsureLoaded();
    return root;
}
