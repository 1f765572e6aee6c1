using System.CommandLine;
using LoopRpt.AI;
using LoopRpt.Cli.Models;
using LoopRpt.Hosting;
using LoopRpt.Inference;
using LoopRpt.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Hosting;

namespace LoopRpt.Cli.Commands;

/// <summary>
/// <c>looprpt serve</c>: the OpenAI-compatible HTTP server (docs/serving.md) over one model directory, or over a hosting
/// model store followed live (<c>--store</c>), optionally with the retraining service beside it (<c>--retrain</c>).
/// </summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model(required: false);
        var store = new Option<string?>("--store") { Description = "Serve a model store's current version instead of --model (docs/hosting.md), and swap to every version published or promoted into it (`looprpt store`, a retraining service, another process) without a restart; requests in flight finish on their version." };
        var poll = new Option<double>("--poll") { Description = "Seconds between checks of the store's current pointer (--store; a file-system watcher makes it sooner where it can); 0 follows only this process's own promotions.", DefaultValueFactory = _ => ModelStoreOptions.Defaults.PollInterval.TotalSeconds };
        var retrain = new Option<string?>("--retrain") { Description = "Run the hosted retraining service in this process, promoting into --store: a JSON settings file whose \"LoopRpt\" section configures it (docs/hosting.md; Root, Device and PollInterval come from this command line)." };
        var urls = new Option<string>("--urls") { Description = "Where to listen (semicolon-separated; port 0 picks a free port).", DefaultValueFactory = _ => LoopRptServerOptions.Defaults.Urls };
        var name = new Option<string?>("--model-id") { Description = "Model name clients use (default: the directory's name)." };
        var q = new Option<double?>("--exit-threshold") { Description = "Default exit threshold q in [0, 1] for requests that give none (default: the model config's, else full depth)." };
        var template = new Option<ChatTemplateKind>("--template") { Description = "Chat prompt format: Auto, ChatMl or Plain.", DefaultValueFactory = _ => ChatTemplateKind.Auto };
        var batch = new Option<int>("--batch-size") { Description = "Rows the generator decodes together.", DefaultValueFactory = _ => LoopRptChatClientOptions.Defaults.BatchSize };
        var maxTokens = new Option<int?>("--max-tokens") { Description = "Largest max_tokens a request may ask for (default: the model's context); a request without one gets the room left in the context, at most this." };
        var concurrent = new Option<int>("--max-concurrent") { Description = "Requests in flight at most (more get HTTP 429).", DefaultValueFactory = _ => LoopRptServerOptions.Defaults.MaxConcurrentRequests };
        var timeout = new Option<double>("--timeout") { Description = "Seconds before a request is cancelled (HTTP 408).", DefaultValueFactory = _ => LoopRptServerOptions.Defaults.RequestTimeoutSeconds };
        var body = new Option<long>("--max-body-bytes") { Description = "Largest request body (HTTP 413 above).", DefaultValueFactory = _ => LoopRptServerOptions.Defaults.MaxRequestBodyBytes };
        var apiKey = new Option<string?>("--api-key") { Description = $"Require 'Authorization: Bearer <key>' on every /v1 route (HTTP 401 otherwise; /healthz stays open). Default: the {LoopRptServerOptions.Defaults.ApiKeyEnvironmentVariable} environment variable, else none." };
        var otlp = new Option<string?>("--otlp-endpoint") { Description = "Export the LoopRpt.Inference and LoopRpt.Server meters over OTLP to this endpoint." };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var cmd = new Command("serve", "Serve a model over HTTP in the OpenAI wire format (chat/completions, completions, embeddings, models, score, healthz).")
        { model, store, poll, retrain, urls, name, q, template, batch, maxTokens, concurrent, timeout, body, apiKey, otlp, device, threads };
        cmd.SetAction(pr =>
        {
            var ctx = CliContext.Require();
            string? modelDir = pr.GetValue(model), storeDir = pr.GetValue(store), retrainFile = pr.GetValue(retrain);
            if ((modelDir is null) == (storeDir is null)) throw CliException.Usage("Give exactly one of --model (one model directory) and --store (a model store, followed live).");
            if (retrainFile is not null && storeDir is null) throw CliException.Usage("--retrain needs --store: the retraining service promotes into the store the server follows.");
            double pollSeconds = pr.GetValue(poll);
            if (!(pollSeconds >= 0 && pollSeconds <= 86400)) throw CliException.Usage($"--poll must be between 0 (off) and 86400 seconds, got {pollSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture)}.");
            Devices.SetThreads(pr.GetValue(threads));
            var server = new LoopRptServerOptions
            {
                Urls = pr.GetValue(urls)!, MaxTokens = pr.GetValue(maxTokens), MaxConcurrentRequests = pr.GetValue(concurrent),
                RequestTimeoutSeconds = pr.GetValue(timeout), MaxRequestBodyBytes = pr.GetValue(body), ApiKey = pr.GetValue(apiKey),
                OtlpEndpoint = pr.GetValue(otlp),
            };
            var chat = new LoopRptChatClientOptions { ExitThreshold = pr.GetValue(q), Template = pr.GetValue(template), BatchSize = pr.GetValue(batch) };
            var embeddings = new LoopRptEmbeddingGeneratorOptions { ExitThreshold = chat.ExitThreshold };
            if (modelDir is not null)
            {
                using var loaded = LoopRptModel.Load(modelDir, pr.GetValue(device)!, pr.GetValue(name));
                Devices.ForModel(loaded.Model);                 // automatic threads: refined by the model's size
                return Run(ctx, LoopRptServer.Build(loaded, server, chat, embeddings), _ => $"model '{loaded.ModelId}' ({loaded.Codec.Description})");
            }
            var source = StoreServing.Configure(storeDir!, retrainFile, pr.GetValue(device)!, TimeSpan.FromSeconds(pollSeconds), pr.GetValue(name));
            return Run(ctx, LoopRptServer.Build(source.Register, server, chat, embeddings), source.Describe);
        });
        return cmd;
    }

    /// <summary>Starts <paramref name="app"/>, reports where it listens, serves until Ctrl+C, then stops it (in-flight requests finish).</summary>
    private static int Run(CliContext ctx, WebApplication app, Func<WebApplication, string> describe)
    {
        try
        {
            try
            {
                app.StartAsync(ctx.CancellationToken).GetAwaiter().GetResult();
            }
            catch (Microsoft.Extensions.Options.OptionsValidationException e)
            {
                throw CliException.Input("--retrain: " + e.Message, e);
            }
            ctx.Output.WriteLine($"looprpt serve: {describe(app)} on {string.Join(", ", app.Addresses())}; Ctrl+C stops.");
            ctx.Output.Flush();
            app.WaitForShutdownAsync(ctx.CancellationToken).GetAwaiter().GetResult();
        }
        finally
        {
            app.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        return ExitCodes.Success;
    }
}
