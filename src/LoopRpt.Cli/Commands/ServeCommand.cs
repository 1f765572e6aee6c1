using System.CommandLine;
using LoopRpt.AI;
using LoopRpt.Cli.Models;
using LoopRpt.Inference;
using LoopRpt.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Hosting;

namespace LoopRpt.Cli.Commands;

/// <summary><c>looprpt serve</c>: the OpenAI-compatible HTTP server (docs/serving.md) over one model directory.</summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
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
        { model, urls, name, q, template, batch, maxTokens, concurrent, timeout, body, apiKey, otlp, device, threads };
        cmd.SetAction(pr =>
        {
            var ctx = CliContext.Require();
            Devices.SetThreads(pr.GetValue(threads));
            var server = new LoopRptServerOptions
            {
                Urls = pr.GetValue(urls)!, MaxTokens = pr.GetValue(maxTokens), MaxConcurrentRequests = pr.GetValue(concurrent),
                RequestTimeoutSeconds = pr.GetValue(timeout), MaxRequestBodyBytes = pr.GetValue(body), ApiKey = pr.GetValue(apiKey),
                OtlpEndpoint = pr.GetValue(otlp),
            };
            var chat = new LoopRptChatClientOptions { ExitThreshold = pr.GetValue(q), Template = pr.GetValue(template), BatchSize = pr.GetValue(batch) };
            using var loaded = LoopRptModel.Load(pr.GetRequiredValue(model), pr.GetValue(device)!, pr.GetValue(name));
            Devices.ForModel(loaded.Model);                 // automatic threads: refined by the model's size
            var app = LoopRptServer.Build(loaded, server, chat, new LoopRptEmbeddingGeneratorOptions { ExitThreshold = chat.ExitThreshold });
            try
            {
                app.StartAsync(ctx.CancellationToken).GetAwaiter().GetResult();
                ctx.Output.WriteLine($"looprpt serve: model '{loaded.ModelId}' ({loaded.Codec.Description}) on {string.Join(", ", app.Addresses())}; Ctrl+C stops.");
                ctx.Output.Flush();
                app.WaitForShutdownAsync(ctx.CancellationToken).GetAwaiter().GetResult();
            }
            finally
            {
                app.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
            return ExitCodes.Success;
        });
        return cmd;
    }
}
