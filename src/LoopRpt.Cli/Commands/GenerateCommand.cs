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
        var prompt = new Option<string?>("--prompt", "-p") { Description = "Prompt text (or --ids)." };
        var ids = CommonOptions.Ids();
        var tokenizer = CommonOptions.TokenizerFile();
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
        var dtype = CommonOptions.DType();
        var bf16Compute = CommonOptions.BFloat16Compute();
        var threads = CommonOptions.Threads();
        var cmd = new Command("generate", "Continue a prompt with adaptive exit, reporting the loops used per token.")
        { model, prompt, ids, tokenizer, maxNew, q, temperature, topP, seed, noStop, kvCache, format, device, dtype, bf16Compute, threads };
        cmd.SetAction(pr =>
        {
            var ctx = CliContext.Require();
            var C = CultureInfo.InvariantCulture;
            double qv = pr.GetValue(q) is var x and >= 0 and <= 1 ? x : throw CliException.Usage("--q must lie in [0, 1].");
            int n = CommonOptions.AtLeast(pr.GetValue(maxNew), 1, "--max-new-tokens");
            double temp = pr.GetValue(temperature) is var t and >= 0 && double.IsFinite(t) ? t : throw CliException.Usage("--temperature must be 0 (greedy) or more.");
            double p = pr.GetValue(topP) is var tp and > 0 and <= 1 ? tp : throw CliException.Usage("--top-p must lie in (0, 1].");
            string? promptText = pr.GetValue(prompt), idsText = pr.GetValue(ids);
            if ((promptText is null) == (idsText is null)) throw CliException.Usage("Give the prompt as --prompt TEXT or as --ids 1,5,9 (exactly one of them).");
            if (pr.GetValue(tokenizer) is { } tf && !File.Exists(tf)) throw CliException.Input($"Tokenizer file '{tf}' does not exist.");
            Devices.SetThreads(pr.GetValue(threads));
            using var session = ModelSession.Load(pr.GetRequiredValue(model), pr.GetValue(device)!, pr.GetValue(dtype)!, ctx.Error, pr.GetValue(bf16Compute)!);
            // With --ids no tokenizer is needed: the output is ids (and text too when a tokenizer is known).
            var codec = idsText is null ? session.CodecOrFile(pr.GetValue(tokenizer)) ?? session.RequireCodec() : session.CodecOrFile(pr.GetValue(tokenizer));
            int vocab = session.Model.Config.VocabSize;
            var promptIds = idsText is not null ? CommonOptions.ParseIds(idsText, vocab) : codec!.Encode(promptText!, addBos: true);
            if (promptIds.Length == 0) throw CliException.Usage("--prompt is empty and the tokenizer has no BOS token to start from.");
            if (promptIds.FirstOrDefault(i => i >= vocab, -1) is var outside and >= 0)
                throw CliException.Model($"Token id {outside} is outside the model's vocabulary [0, {vocab}): the tokenizer does not match the model.");
            if (promptIds.Length + n > session.Model.Config.MaxPositionEmbeddings)
                throw CliException.Usage($"The prompt ({promptIds.Length} tokens) plus --max-new-tokens {n} exceeds the model's context of {session.Model.Config.MaxPositionEmbeddings}.");
            var options = new GenerationOptions
            {
                MaxNewTokens = n, Exit = ExitMode.Q(qv), Temperature = temp, TopP = p, Seed = pr.GetValue(seed), KvCache = pr.GetValue(kvCache),
                StopTokens = pr.GetValue(noStop) || (codec?.EosTokenId ?? session.Model.Config.EosTokenId) is not { } eos ? [] : [eos],
            };
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var result = new LoopedGenerator(session.Model).Generate(promptIds.Select(i => (long)i).ToArray(), options, ctx.CancellationToken);
            double elapsed = clock.Elapsed.TotalSeconds;
            var tokens = result.Tokens.Select(i => (int)i).ToArray();
            string? text = codec?.Decode(tokens);
            int loops = session.Model.Config.TotalUtSteps;
            double tokS = tokens.Length / Math.Max(elapsed, 1e-9), fraction = result.MeanLoops / loops;
            if (pr.GetValue(format) == GenerateFormat.Json)
            {
                var json = new
                {
                    prompt = promptText, prompt_ids = promptIds, text, loops, q = qv, mean_loops = result.MeanLoops, compute_fraction = fraction,
                    elapsed_s = elapsed, tokens_per_second = tokS,
                    finish_reason = result.FinishReason.ToString().ToLowerInvariant(),
                    tokens = tokens.Select((id, i) => new { id, text = codec?.Decode([id]), loops = result.LoopsUsed[i] }).ToArray(),
                };
                ctx.Output.WriteLine(JsonSerializer.Serialize(json, new JsonSerializerOptions { WriteIndented = true }));
            }
            else
            {
                ctx.Output.WriteLine(text is null ? string.Join(",", promptIds.Concat(tokens)) : (promptText ?? codec!.Decode(promptIds)) + text);
                ctx.Output.WriteLine();
                ctx.Output.WriteLine("token\tloops\tid\ttext");
                for (int i = 0; i < tokens.Length; i++)
                    ctx.Output.WriteLine($"{i}\t{result.LoopsUsed[i]}\t{tokens[i]}\t{(codec is null ? "" : JsonSerializer.Serialize(codec.Decode([tokens[i]])))}");
                ctx.Output.WriteLine(string.Create(C, $"generate tokens={tokens.Length} mean_loops={result.MeanLoops:F3} of {loops} compute_fraction={fraction:F3} q={qv} elapsed_s={elapsed:F2} tok_s={tokS:F2} finish={result.FinishReason.ToString().ToLowerInvariant()}"));
            }
            return ExitCodes.Success;
        });
        return cmd;
    }
}
