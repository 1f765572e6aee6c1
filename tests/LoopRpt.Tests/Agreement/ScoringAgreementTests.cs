using System.Globalization;
using System.Text.Json;
using LoopRpt.AI;
using LoopRpt.Checkpoints;
using LoopRpt.Hosting;
using LoopRpt.Inference;
using LoopRpt.Tokenization;
using LoopRpt.MLNet;
using LoopRpt.Model;
using LoopRpt.Tests.AI;
using LoopRpt.Tests.Cli;
using LoopRpt.Tests.Inference;
using LoopRpt.Tests.MLNet;
using LoopRpt.Tests.Server;
using Microsoft.Extensions.Options;
using Microsoft.ML;
using Microsoft.ML.Data;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Tests.Agreement;

/// <summary>
/// The four scoring faces (<c>looprpt score</c>, <c>POST /v1/score</c>, hosting's <c>ModelScoring</c>, ML.NET's
/// <see cref="AdaptiveExitScoringTransformer"/>) against the core <see cref="DocumentScorer"/>, and the core against an
/// independent computation (a full forward of each window, log-softmax, gathered by hand).
/// </summary>
[Collection(nameof(ServerCollection))]
public class ScoringAgreementTests
{
    /// <summary>The model's max_position_embeddings, hence every face's default context: documents beyond it are windowed.</summary>
    private const int Context = 24;

    private static readonly string Alphabet = LettersTokenizer.Alphabet;

    /// <summary>
    /// Documents as a scored text is tokenized (<see cref="DocumentTokens"/>: the start id, then one letter-tokenizer id per
    /// character): one scored token, short, exactly the context, one past it (a two-token last window), and several windows.
    /// </summary>
    private static readonly int[][] Documents =
        [.. new[] { 2, 7, Context, Context + 1, 2 * Context + 13 }.Select((n, d) => (int[])[LettersTokenizer.EndOfText, .. Ids(n - 1, seed: d + 3)])];

    private static int[] Ids(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => rng.Next(0, Alphabet.Length)).ToArray();
    }

    /// <summary>The text a document's ids after its start id spell.</summary>
    private static string Text(int[] ids) => string.Concat(ids.Skip(1).Select(i => Alphabet[i]));

    /// <summary>The spread-gate test model (exit steps spread over the loops) with max_position_embeddings = <see cref="Context"/>.</summary>
    private static OuroForCausalLM Model()
    {
        using var spread = InferenceTestUtil.SpreadGateModel(gateScale: 40, seed: 1);
        var c = spread.Config;
        var config = new OuroConfig
        {
            VocabSize = c.VocabSize, HiddenSize = c.HiddenSize, IntermediateSize = c.IntermediateSize, NumHiddenLayers = c.NumHiddenLayers,
            NumAttentionHeads = c.NumAttentionHeads, NumKeyValueHeads = c.NumKeyValueHeads, TotalUtSteps = c.TotalUtSteps,
            RopeTheta = c.RopeTheta, MaxPositionEmbeddings = Context, TieWordEmbeddings = c.TieWordEmbeddings,
        };
        var lm = new OuroForCausalLM(config);
        var source = spread.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using (no_grad())
            foreach (var (name, p) in lm.named_parameters()) p.copy_(source[name]);
        lm.eval();
        return lm;
    }

    /// <summary>Per-token log-probabilities, exit steps and the mean exit step of one document, as a face reports them.</summary>
    private sealed record FaceScore(float[] LogProbs, float[] ExitSteps, double MeanExitStep);

    private static FaceScore FromJson(JsonElement row, string logProbs)
        => new([.. row.GetProperty(logProbs).EnumerateArray().Select(e => (float)e.GetDouble())],
            [.. row.GetProperty("exit_steps").EnumerateArray().Select(e => (float)e.GetInt32())],
            row.GetProperty("mean_exit_step").ValueKind == JsonValueKind.Null ? double.NaN : row.GetProperty("mean_exit_step").GetDouble());

    private static void AssertAgree(ScoredDocument expected, FaceScore actual, string what)
    {
        Tolerance.AssertClose(expected.TokenLogProbabilities, actual.LogProbs, what + " log-probs");
        Tolerance.AssertClose(expected.ExitSteps, actual.ExitSteps, what + " exit steps");
        if (expected.ScoredTokens == 0) Assert.True(double.IsNaN(actual.MeanExitStep), $"{what}: a document with no scored token has no mean exit step");
        else Tolerance.AssertClose(expected.MeanExitStep, actual.MeanExitStep, what + " mean exit step");
    }

    [Theory]
    [InlineData(0.5)]
    [InlineData(1.0)]
    public async Task TheFourFacesGiveTheCoreScorersPerTokenLogProbabilitiesAndExitSteps(double q)
    {
        var root = CliRunner.TempDir();
        var dir = Path.Combine(root, "model");
        try
        {
            IReadOnlyList<ScoredDocument> core;
            using (var lm = Model())
            {
                ModelDirectory.Save(dir, lm, new ModelMeta());
                core = new DocumentScorer(lm, new DocumentScorerOptions { Exit = ExitMode.Q(q) }).Score(Documents);
            }
            // The core's own definitions: n - 1 scored positions, mean exit step over them; windows really happen.
            for (int d = 0; d < Documents.Length; d++)
            {
                Assert.Equal(Math.Max(0, Documents[d].Length - 1), core[d].ScoredTokens);
                if (core[d].ScoredTokens > 0) Tolerance.AssertClose(core[d].ExitSteps.Average(x => (double)x), core[d].MeanExitStep, $"doc {d} mean");
            }
            if (q < 1) Assert.True(core[^1].ExitSteps.Distinct().Count() > 1, "the model's exits should spread, or exit steps compare nothing");

            // CLI, in-process: one document per call as --ids.
            for (int d = 0; d < Documents.Length; d++)
            {
                var r = CliRunner.Run("score", "--model", dir, "--ids", string.Join(",", Documents[d]), "--q", q.ToString(CultureInfo.InvariantCulture),
                    "--per-token", "--threads", "1");
                Assert.True(r.Code == 0, r.ToString());
                using var json = JsonDocument.Parse(r.Out);
                AssertAgree(core[d], FromJson(json.RootElement[0], "token_log_probs"), $"cli doc {d}");
            }

            // /v1/score on an in-process server: the text, framed by the core's start rule, encodes to the document's ids.
            using (var served = LoopRptModel.FromModel(Model(), new LettersTokenizer().ToTextCodec(), "tiny-test"))
            {
                await using var server = await LoopbackServer.StartAsync(served);
                var body = JsonSerializer.Serialize(new { input = Documents.Select(Text).ToArray(), exit_threshold = q });
                var (status, json) = await OpenAIServerTests.Post(server, "/v1/score", body);
                Assert.Equal(System.Net.HttpStatusCode.OK, status);
                for (int d = 0; d < Documents.Length; d++)
                {
                    var row = json.GetProperty("data")[d];
                    Assert.Equal(Documents[d].Length, row.GetProperty("tokens").GetInt32());   // the start id + the text, nothing truncated
                    AssertAgree(core[d], FromJson(row, "token_log_probs"), $"server doc {d}");
                }
            }

            // Hosting: a model store whose first version is the saved model.
            using (var store = new ModelStore(Options.Create(new ModelStoreOptions { Root = Path.Combine(root, "store"), InitialModelDirectory = dir }),
                       new ByteTokenizerService()))
            using (var lease = store.Acquire())
            {
                var hosted = lease.Score(Documents, ExitMode.Q(q));
                for (int d = 0; d < Documents.Length; d++)
                    AssertAgree(core[d], new FaceScore(hosted[d].Document.TokenLogProbabilities, hosted[d].Document.ExitSteps, hosted[d].Document.MeanExitStep), $"hosting doc {d}");
            }

            // ML.NET: the scoring transformer over a token column.
            var ml = new MLContext(seed: 1);
            var data = ml.Data.LoadFromEnumerable(Documents.Select(ids => new TokenDoc { Tokens = ids }));
            using (var scorer = ml.LoopRpt().ScoreWithModel(new AdaptiveExitScoringTransformer.Options { ModelDirectory = dir, ExitMode = ExitMode.Q(q) }).Fit(data))
            {
                var scored = scorer.Transform(data);
                var logProbs = scored.GetColumn<float[]>(ScoreColumns.TokenLogProbabilities).ToArray();
                var exits = scored.GetColumn<float[]>(ScoreColumns.ExitSteps).ToArray();
                var means = scored.GetColumn<float>(ScoreColumns.MeanExitStep).ToArray();
                for (int d = 0; d < Documents.Length; d++)
                    AssertAgree(core[d], new FaceScore(logProbs[d] ?? [], exits[d] ?? [], means[d]), $"ml.net doc {d}");
            }
        }
        finally
        {
            try { Directory.Delete(root, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// Independent computation: windows placed by hand at w(C - 1), a full forward of each window alone, log-softmax at
    /// every loop, each token's Q-exit step from the exit CDF summed on the host, the gold log-probability gathered there.
    /// </summary>
    private static (List<float> Gold, List<float> Exit, List<float> Entropy, int Next) Independent(OuroForCausalLM lm, int[] doc, int context, double q)
    {
        var gold = new List<float>();
        var exit = new List<float>();
        var entropy = new List<float>();
        int next = -1, T = lm.Config.TotalUtSteps;
        for (int start = 0; start < doc.Length; start += context - 1)
        {
            int len = Math.Min(context, doc.Length - start);
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var output = lm.Forward(tensor(doc[start..(start + len)].Select(i => (long)i).ToArray(), [1, len]));
            var probs = output.ExitProbabilities()[0].contiguous().data<float>().ToArray();                 // (L * T)
            var logp = Enumerable.Range(0, T).Select(t => F.log_softmax(lm.Logits(output.Hidden[t]).to_type(ScalarType.Float32), -1)[0].contiguous()).ToArray();
            long vocab = logp[0].shape[1];
            var host = logp.Select(t => t.data<float>().ToArray()).ToArray();                                 // T × (L * V)
            for (int j = 0; j < len; j++)
            {
                int step = T - 1;
                float cdf = 0;
                for (int t = 0; t < T - 1 && q < 1; t++)
                {
                    cdf += probs[j * T + t];
                    if (cdf >= q) { step = t; break; }
                }
                var row = host[step].AsSpan((int)(j * vocab), (int)vocab);
                if (j + 1 == len)
                {
                    if (start + len == doc.Length) next = row.IndexOf(row.ToArray().Max());
                    break;
                }
                gold.Add(row[doc[start + j + 1]]);
                exit.Add(step + 1);
                double h = 0;
                foreach (var v in row) h -= Math.Exp(v) * v;
                entropy.Add((float)h);
            }
            if (start + len == doc.Length) break;
        }
        return (gold, exit, entropy, next);
    }

    [Theory]
    [InlineData(1.0, false)]   // the last loop: the adaptive pass equals "compute all"
    [InlineData(1.0, true)]
    [InlineData(0.5, true)]    // Q-exit selected after a full-depth pass
    public void TheCoreScorerEqualsAFullForwardOfEachWindow(double q, bool fullDepth)
    {
        using var lm = Model();
        const int context = 9;                                       // below the model's 24: windows of 9 overlapping by one
        var scorer = new DocumentScorer(lm, new DocumentScorerOptions { Exit = ExitMode.Q(q), FullDepth = fullDepth, ContextLength = context, BatchSize = 3 });
        Assert.Equal(context, scorer.ContextLength);
        var docs = new[] { Ids(30, seed: 11), Ids(5, seed: 12), Ids(9, seed: 13), Ids(10, seed: 14) };
        var scores = scorer.Score(docs);
        for (int d = 0; d < docs.Length; d++)
        {
            var (gold, exit, entropy, next) = Independent(lm, docs[d], context, q);
            Assert.Equal(docs[d].Length - 1, gold.Count);            // each token after the first scored exactly once
            Tolerance.AssertClose(gold, scores[d].TokenLogProbabilities, $"doc {d} log-probs");
            Tolerance.AssertClose(exit, scores[d].ExitSteps, $"doc {d} exit steps");
            Tolerance.AssertClose(entropy, scores[d].Entropies, $"doc {d} entropies");
            Assert.Equal(next, scores[d].NextToken);
            Tolerance.AssertClose(gold.Sum(x => (double)x), scores[d].LogLikelihood, $"doc {d} log-likelihood");
        }
        if (q < 1) Assert.True(scores[0].ExitSteps.Distinct().Count() > 1, "exits should spread at q = 0.5");
    }

    [Fact]
    public void WindowsOverlapByOneTokenAndScoreEveryTokenAfterTheFirstOnce()
    {
        foreach (int context in new[] { 2, 3, 5, 24 })
            for (int n = 0; n <= 60; n++)
            {
                var windows = DocumentScorer.Windows(n, context);
                var predicted = windows.SelectMany(w => Enumerable.Range(w.Start + 1, w.Length - 1)).ToList();
                Assert.Equal(Enumerable.Range(1, Math.Max(0, n - 1)), predicted);                     // each token once, in order
                Assert.All(windows, w => Assert.InRange(w.Length, 1, context));
                for (int w = 1; w < windows.Count; w++)
                {
                    Assert.Equal(windows[w - 1].Start + windows[w - 1].Length - 1, windows[w].Start);   // overlap of one token
                    Assert.Equal(context, windows[w - 1].Length);                                       // only the last window is short
                }
                if (n > 0) Assert.Equal(n, windows[^1].Start + windows[^1].Length);
                else Assert.Empty(windows);
            }
        Assert.Throws<ArgumentOutOfRangeException>(() => DocumentScorer.Windows(5, 1));
    }

    [Fact]
    public void OptionsAndTokenIdsAreCheckedEarly()
    {
        using var lm = Model();
        Assert.Throws<ArgumentOutOfRangeException>(() => new DocumentScorer(lm, new DocumentScorerOptions { BatchSize = 0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new DocumentScorer(lm, new DocumentScorerOptions { ContextLength = 1 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new DocumentScorer(lm, new DocumentScorerOptions { Exit = ExitMode.Fixed(4) }));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new DocumentScorer(lm).Score([[1, 2, 64]]));
        Assert.Contains("outside the model's vocabulary", e.Message);
        Assert.Equal(Context, new DocumentScorer(lm).ContextLength);                                     // 512 capped by the model
    }
}
