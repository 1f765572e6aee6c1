using System.Text.Json;
using System.Text.Json.Serialization;
using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Interop;

/// <summary>Per-position results of <see cref="LogProbReport"/>.</summary>
public sealed record LogProbPosition
{
    /// <summary>0-based position in the input.</summary>
    [JsonPropertyName("position")] public int Position { get; init; }

    /// <summary>The input token at this position.</summary>
    [JsonPropertyName("token")] public int Token { get; init; }

    /// <summary>The following input token, scored here; null at the last position.</summary>
    [JsonPropertyName("next_token")] public int? NextToken { get; init; }

    /// <summary>log p(next_token) when reading out after loop t, t = 0..T-1; null at the last position.</summary>
    [JsonPropertyName("next_token_log_probs")] public double[]? NextTokenLogProbs { get; init; }

    /// <summary>Greedy (argmax) next token after each loop.</summary>
    [JsonPropertyName("argmax")] public int[] Argmax { get; init; } = [];

    /// <summary>Exit-gate logits after each loop.</summary>
    [JsonPropertyName("gate_logits")] public double[] GateLogits { get; init; } = [];

    /// <summary>Exit distribution p(t) over the loops (docs/method.md §2), sums to 1.</summary>
    [JsonPropertyName("exit_probabilities")] public double[] ExitProbabilities { get; init; } = [];

    /// <summary>0-based Q-exit step at the report's threshold.</summary>
    [JsonPropertyName("q_exit_step")] public int QExitStep { get; init; }
}

/// <summary>
/// Per-step next-token log-probabilities and exit probabilities of a model on given token ids, as JSON: the numbers to
/// compare against another implementation (the Python reference) on the same checkpoint. See docs/interop.md.
/// </summary>
public sealed record LogProbReport
{
    /// <summary>Format version of the JSON (1: this layout).</summary>
    [JsonPropertyName("format_version")] public int FormatVersion { get; init; } = 1;

    /// <summary>Where the model came from (free text, e.g. a directory).</summary>
    [JsonPropertyName("model")] public string? Model { get; init; }

    /// <summary>Parameter dtype the forward pass ran in (float32, bfloat16).</summary>
    [JsonPropertyName("dtype")] public string DType { get; init; } = "float32";

    /// <summary>Loops run (T).</summary>
    [JsonPropertyName("loops")] public int Loops { get; init; }

    /// <summary>Q-exit threshold used for <see cref="LogProbPosition.QExitStep"/>.</summary>
    [JsonPropertyName("q")] public double Q { get; init; }

    /// <summary>The input ids.</summary>
    [JsonPropertyName("input_ids")] public int[] InputIds { get; init; } = [];

    /// <summary>One entry per input position.</summary>
    [JsonPropertyName("positions")] public LogProbPosition[] Positions { get; init; } = [];

    /// <summary>
    /// Runs <paramref name="model"/> once on <paramref name="ids"/> (one sequence) and reads every loop out.
    /// <paramref name="q"/> defaults to the config's <c>early_exit_threshold</c>, else 1.0.
    /// </summary>
    public static LogProbReport Compute(OuroForCausalLM model, IReadOnlyList<int> ids, double? q = null, int? loops = null, string? source = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (ids.Count == 0) throw new ArgumentException("At least one token id is needed.", nameof(ids));
        if (ids.Any(i => i < 0 || i >= model.Config.VocabSize))
            throw new ArgumentOutOfRangeException(nameof(ids), ids.First(i => i < 0 || i >= model.Config.VocabSize),
                $"Token ids must lie in [0, vocab_size = {model.Config.VocabSize}).");
        double threshold = q ?? model.Config.EarlyExitThreshold ?? 1.0;
        if (!(threshold >= 0 && threshold <= 1)) throw new ArgumentOutOfRangeException(nameof(q), threshold, "q must lie in [0, 1].");

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        bool wasTraining = model.training;
        model.eval();
        try
        {
            int S = ids.Count;
            var input = tensor(ids.Select(i => (long)i).ToArray(), dtype: ScalarType.Int64, device: model.Device).unsqueeze(0); // (1, S)
            var output = model.Forward(input, new LoopForwardOptions { Loops = loops });
            int T = output.Steps;
            var logProbs = new double[T][];                                                            // [t][s] of next token
            var argmax = new long[T][];
            var next = S > 1 ? input.narrow(1, 1, S - 1) : null;                                        // (1, S-1)
            for (int t = 0; t < T; t++)
            {
                var logits = model.Logits(output.Hidden[t]).to_type(ScalarType.Float32);                // (1, S, V)
                argmax[t] = logits.argmax(-1).squeeze(0).cpu().data<long>().ToArray();
                if (next is not null)
                {
                    var logp = logits.narrow(1, 0, S - 1).log_softmax(-1).gather(-1, next.unsqueeze(-1)); // (1, S-1, 1)
                    logProbs[t] = logp.to_type(ScalarType.Float64).cpu().data<double>().ToArray();
                }
            }
            var gates = output.GateLogits.to_type(ScalarType.Float64).squeeze(0).cpu().data<double>().ToArray(); // (S*T)
            var probs = output.ExitProbabilities();                                                           // (1, S, T)
            var exits = ExitDistribution.QExitStep(probs, threshold).squeeze(0).cpu().data<long>().ToArray();
            var p = probs.to_type(ScalarType.Float64).squeeze(0).cpu().data<double>().ToArray();

            var positions = new LogProbPosition[S];
            for (int s = 0; s < S; s++)
                positions[s] = new LogProbPosition
                {
                    Position = s,
                    Token = ids[s],
                    NextToken = s + 1 < S ? ids[s + 1] : null,
                    NextTokenLogProbs = s + 1 < S ? Enumerable.Range(0, T).Select(t => logProbs[t][s]).ToArray() : null,
                    Argmax = Enumerable.Range(0, T).Select(t => (int)argmax[t][s]).ToArray(),
                    GateLogits = gates.AsSpan(s * T, T).ToArray(),
                    ExitProbabilities = p.AsSpan(s * T, T).ToArray(),
                    QExitStep = (int)exits[s],
                };
            return new LogProbReport
            {
                Model = source,
                DType = OuroCheckpoint.TorchDTypeName(model.DType),
                Loops = T,
                Q = threshold,
                InputIds = ids.ToArray(),
                Positions = positions,
            };
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }

    /// <summary>The report as indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true });
}
