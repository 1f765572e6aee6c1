using System.Text.Json;
using LoopRpt.Interop;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Interop;

public sealed class LogProbReportTests
{
    [Fact]
    public void MatchesAnIndependentComputation()
    {
        using var lm = ReferenceLayout.RandomModel(ReferenceLayout.TinyConfig(), 31);
        int[] ids = [5, 17, 200, 3, 3, 99, 271];
        var report = LogProbReport.Compute(lm, ids, source: "memory");
        int T = lm.Config.TotalUtSteps, S = ids.Length, V = lm.Config.VocabSize;
        Assert.Equal(T, report.Loops);
        // bitwise: a config value parsed from JSON text, not computed
        Assert.Equal(0.6, report.Q);  // the config's early_exit_threshold
        Assert.Equal(S, report.Positions.Length);

        // Reference numbers: logits of each loop read out by hand, log-softmax and exit distribution in double.
        float[][] logits;
        float[] gates;
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            var o = lm.Forward(tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0));
            logits = o.Hidden.Select(h => TestUtil.ToArray(lm.Logits(h))).ToArray();   // [t] (S*V)
            gates = TestUtil.ToArray(o.GateLogits);                                     // (S*T)
        }
        for (int s = 0; s < S; s++)
        {
            var pos = report.Positions[s];
            Assert.Equal(ids[s], pos.Token);
            for (int t = 0; t < T; t++)
            {
                var row = logits[t].AsSpan(s * V, V).ToArray().Select(x => (double)x).ToArray();
                double max = row.Max(), lse = max + Math.Log(row.Sum(x => Math.Exp(x - max)));
                Assert.Equal(Array.IndexOf(row, max), pos.Argmax[t]);
                if (s + 1 < S) Tolerance.AssertClose(row[ids[s + 1]] - lse, pos.NextTokenLogProbs![t], absolute: 1e-4);
            }
            if (s + 1 == S)
            {
                Assert.Null(pos.NextToken);
                Assert.Null(pos.NextTokenLogProbs);
            }
            // p(t) = lambda_t * prod_{u<t}(1 - lambda_u), the last step takes the rest (docs/method.md §2).
            double survive = 1, cdf = 0;
            int qExit = T - 1;
            for (int t = 0; t < T; t++)
            {
                double lambda = 1 / (1 + Math.Exp(-gates[s * T + t]));
                double p = t < T - 1 ? lambda * survive : survive;
                survive *= 1 - lambda;
                Tolerance.AssertClose(gates[s * T + t], pos.GateLogits[t], absolute: 1e-5);
                Tolerance.AssertClose(p, pos.ExitProbabilities[t], absolute: 1e-5);
                cdf += p;
                if (qExit == T - 1 && t < T - 1 && cdf >= 0.6) qExit = t;
            }
            Assert.Equal(qExit, pos.QExitStep);
        }

        using var doc = JsonDocument.Parse(report.ToJson());
        Assert.Equal(1, doc.RootElement.GetProperty("format_version").GetInt32());
        Assert.Equal(T, doc.RootElement.GetProperty("positions")[0].GetProperty("next_token_log_probs").GetArrayLength());
        Assert.Equal(JsonValueKind.Null, doc.RootElement.GetProperty("positions")[S - 1].GetProperty("next_token_log_probs").ValueKind);
    }

    [Fact]
    public void RejectsIdsOutsideTheVocabulary()
    {
        using var lm = ReferenceLayout.RandomModel(ReferenceLayout.TinyConfig(), 31);
        Assert.Throws<ArgumentOutOfRangeException>(() => LogProbReport.Compute(lm, [1, 272]));
        Assert.Throws<ArgumentException>(() => LogProbReport.Compute(lm, []));
    }
}
