using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using LoopRpt.Cli.Models;
using LoopRpt.Inference;
using LoopRpt.Model;

namespace LoopRpt.Cli.Commands;

/// <summary>Output format of <c>looprpt generate</c>.</summary>
public enum GenerateFormat
{
    /// <summary>The continuation, then one line per token with the loops it used, then a summary line.</summary>
    Text,
    /// <summary>One JSON object: text, tokens with loops, mean loops, finish reason.</summary>
    Json,
}

/// <summary><c>looprpt generate</c>: KV-cached generation with per-token adaptive exit, reporting the loops each token used.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var prompt = new Option<string>("--prompt", "-p") { Description = "Prompt text.", Required = true };
        var maxNew = new Option<int>("--max-new-tokens", "-n") { Description = "Tokens to generate at most.", DefaultValueFactory = _ => GenerationOptions.Defaults.MaxNewTokens };
        var q = new Option<double>("--q") { Description = "Q-exit threshold in [0, 1] (1 = every token runs all loops).", DefaultValueFactory = _ => 0.5 };
        var temperature = new Option<double>("--temperature") { Description = "Sampling temperature (0 = greedy).", DefaultValueFactory = _ => 0.0 };
        var topP = new Option<double>("--top-p") { Description = "Nucleus mass in (0, 1].", DefaultValueFactory = _ => GenerationOptions.Defaults.TopP };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the sampler (a local generator).", DefaultValueFactory = _ => GenerationOptions.Defaults.Seed };
        var noStop = new Option<bool>("--no-stop") { Description = "Do not stop at the end-of-text token." };
        var kvCache = new Option<KvCacheMode>("--kv-cache")
        {
            Description = "PerLoop (exact: one key/value slot per loop and layer) or LastLoop (Ouro's shared slot: 1/loops of the memory, approximate).",
            DefaultValueFactory = _ => KvCacheMode.PerLoop,
        };
        var format = new Option<GenerateFormat>("--format") { Description = "Text or Json.", DefaultValueFactory = _ => GenerateFormat.Text };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var cmd = new Command("generate", "Continue a prompt with adaptive exit, reporting the loops used per token.")
        { model, prompt, maxNew, q, temperature, topP, seed, noStop, kvCache, format, device, threads };
        cmd.SetAction(pr =>
        {
            var ctx = CliContext.Require();
            var C = CultureInfo.InvariantCulture;
            double qv = pr.GetValue(q) is var x and >= 0 and <= 1 ? x : throw CliException.Usage("--q must lie in [0, 1].");
            int n = CommonOptions.AtLeast(pr.GetValue(maxNew), 1, "--max-new-tokens");
            double temp = pr.GetValue(temperature) is var t and >= 0 && double.IsFinite(t) ? t : throw CliException.Usage("--temperature must be 0 (greedy) or more.");
            double p = pr.GetValue(topP) is var tp and > 0 and <= 1 ? tp : throw CliException.Usage("--top-p must lie in (0, 1].");
            Devices.SetThreads(pr.GetValue(threads));
            using var session = ModelSession.Load(pr.GetRequiredValue(model), pr.GetValue(device)!, "float32", ctx.Error);
            var codec = session.RequireCodec();
            var ids = codec.Encode(pr.GetRequiredValue(prompt), addBos: true);
            if (ids.Length == 0) throw CliException.Usage("--prompt is empty and the tokenizer has no BOS token to start from.");
            if (ids.Length + n > session.Model.Config.MaxPositionEmbeddings)
                throw CliException.Usage($"The prompt ({ids.Length} tokens) plus --max-new-tokens {n} exceeds the model's context of {session.Model.Config.MaxPositionEmbeddings}.");
            var options = new GenerationOptions
            {
                MaxNewTokens = n, Exit = ExitMode.Q(qv), Temperature = temp, TopP = p, Seed = pr.GetValue(seed), KvCache = pr.GetValue(kvCache),
                StopTokens = pr.GetValue(noStop) || codec.EosTokenId is null ? [] : [codec.EosTokenId.Value],
            };
            var result = new LoopedGenerator(session.Model).Generate(ids.Select(i => (long)i).ToArray(), options, ctx.CancellationToken);
            var tokens = result.Tokens.Select(i => (int)i).ToArray();
            var text = codec.Decode(tokens);
            if (pr.GetValue(format) == GenerateFormat.Json)
            {
                var json = new
                {
                    prompt = pr.GetValue(prompt), text, loops = session.Model.Config.TotalUtSteps, q = qv, mean_loops = result.MeanLoops,
                    finish_reason = result.FinishReason.ToString().ToLowerInvariant(),
                    tokens = tokens.Select((id, i) => new { id, text = codec.Decode([id]), loops = result.LoopsUsed[i] }).ToArray(),
                };
                ctx.Output.WriteLine(JsonSerializer.Serialize(json, new JsonSerializerOptions { WriteIndented = true }));
            }
            else
            {
                ctx.Output.WriteLine(pr.GetValue(prompt) + text);
                ctx.Output.WriteLine();
                ctx.Output.WriteLine("token\tloops\ttext");
                for (int i = 0; i < tokens.Length; i++)
                    ctx.Output.WriteLine($"{i}\t{result.LoopsUsed[i]}\t{JsonSerializer.Serialize(codec.Decode([tokens[i]]))}");
                ctx.Output.WriteLine(string.Create(C, $"generate tokens={tokens.Length} mean_loops={result.MeanLoops:F3} of {session.Model.Config.TotalUtSteps} q={qv} finish={result.FinishReason.ToString().ToLowerInvariant()}"));
            }
            return ExitCodes.Success;
        });
        return cmd;
    }
}
