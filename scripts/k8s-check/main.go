// k8s-check decodes rendered Kubernetes manifests (multi-document YAML on stdin) into the
// API's own Go types, strictly: an unknown field, a misspelt one or a value of the wrong
// type is an error, as the API server's strict field validation makes it. It checks
// the kinds the Herald chart renders, without a cluster and without downloading schemas.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

func target(meta metav1.TypeMeta) any {
	switch meta.APIVersion + "/" + meta.Kind {
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}
	case "networking.k8s.io/v1/Ingress":
		return &networkingv1.Ingress{}
	}
	return nil
}

func main() {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(os.Stdin))
	failed := false
	for n := 1; ; n++ {
		doc, err := reader.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "document %d: %v\n", n, err)
			os.Exit(2)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			fmt.Fprintf(os.Stderr, "document %d: %v\n", n, err)
			failed = true
			continue
		}
		obj := target(meta)
		if obj == nil {
			// Custom resources (ServiceMonitor) have no Go type here: named, not checked.
			fmt.Printf("skipped %s %s\n", meta.APIVersion, meta.Kind)
			continue
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			fmt.Fprintf(os.Stderr, "%s %s: %v\n", meta.APIVersion, meta.Kind, err)
			failed = true
			continue
		}
		fmt.Printf("ok %s %s\n", meta.APIVersion, meta.Kind)
	}
	if failed {
		os.Exit(1)
	}
}
